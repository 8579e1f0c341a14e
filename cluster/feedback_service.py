"""The feedback service: a Ray Serve deployment that micro-batches feedback items from all
workers, and the worker-side client that reaches it through a DeploymentHandle.

Requests are bundles (a worker's items of a few ticks); `@serve.batch` counts items, not bundles,
through `batch_size_fn`, and `max_ongoing_requests` is sized so batches can really fill.
"""
from __future__ import annotations

import logging
import queue
import threading

from ray import serve

from actors.feedback_client import ResultInbox
from configs.schema import FeedbackConfig
from inference.feedback import FeedbackItem, FeedbackResult

logger = logging.getLogger(__name__)

APP_NAME = "mentor-feedback"


def _items_in(bundles: list) -> int:
    """Items in a batch of bundles. Must never raise: Serve hangs later requests if it does."""
    try:
        return sum(len(bundle) for bundle in bundles)
    except Exception:  # noqa: BLE001 - a malformed request still counts as one
        return len(bundles)


def _actor_options(config: FeedbackConfig, use_gpu: bool) -> dict:
    options = {"num_cpus": config.replica_cpus, "num_gpus": config.gpu_fraction if use_gpu else 0.0}
    if "vlm" in config.model.split("+"):
        # vLLM pins its own torch: its replica gets its own environment rather than the learner's.
        options["runtime_env"] = {"pip": list(config.vlm.pip)}
    return options


def feedback_app(config: FeedbackConfig, seed: int, use_gpu: bool):
    """The Serve application for `config`: bind it with serve.run(..., name=APP_NAME)."""
    max_batch = config.max_batch_size

    @serve.deployment(
        name="FeedbackModel",
        num_replicas=config.replicas,
        # Every item of a full batch may come from its own bundle: let that many bundles queue.
        max_ongoing_requests=max_batch * config.max_concurrent_batches,
        ray_actor_options=_actor_options(config, use_gpu),
        # One access-log line per bundle would drown the job's output; Serve metrics still count them.
        logging_config={"enable_access_log": False},
    )
    class FeedbackDeployment:
        def __init__(self):
            from inference.registry import build_model

            self._model = build_model(config, seed)
            self.failed_batches = 0

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=config.batch_wait_timeout_s,
                     max_concurrent_batches=config.max_concurrent_batches, batch_size_fn=_items_in)
        async def answer(self, bundles: list[list[FeedbackItem]]) -> list[list[FeedbackResult]]:
            items = [item for bundle in bundles for item in bundle]
            try:
                by_key = {r.key: r for r in self._model(items)}
            except Exception:  # the items stay unanswered; workers mark them unavailable
                self.failed_batches += 1
                logger.warning("feedback model failed on %d items", len(items), exc_info=True)
                by_key = {}
            return [[by_key[i.key] for i in bundle if i.key in by_key] for bundle in bundles]

        async def __call__(self, bundle: list[FeedbackItem]) -> list[FeedbackResult]:
            return await self.answer(bundle)

    return FeedbackDeployment.bind()


class ServeFeedbackClient:
    """Sends bundles through a DeploymentHandle and collects answers on a helper thread, so the
    simulator never blocks. A failed or timed-out call leaves its items unanswered (mask 0)."""

    def __init__(self, handle, timeout_s: float):
        self._handle = handle
        self._timeout_s = timeout_s
        self._responses: queue.Queue = queue.Queue()
        self._inbox = ResultInbox()
        self.failed_calls = 0
        self._thread = threading.Thread(target=self._collect, name="feedback-responses", daemon=True)
        self._thread.start()

    def submit(self, items: list[FeedbackItem]) -> None:
        self._responses.put(self._handle.remote(items))

    def poll(self) -> list[FeedbackResult]:
        return self._inbox.take()

    def close(self) -> None:
        self._responses.put(None)
        self._thread.join(timeout=self._timeout_s + 1.0)

    def _collect(self) -> None:
        while True:
            response = self._responses.get()
            if response is None:
                return
            try:
                results = response.result(timeout_s=self._timeout_s)
            except Exception:  # a dead replica or a time-out: these items expire unanswered
                self.failed_calls += 1
                logger.warning("feedback call failed", exc_info=True)
                continue
            self._inbox.put(results)


class SyncServeFeedbackClient:
    """One blocking call per bundle: the synchronous baseline of the benchmark."""

    def __init__(self, handle, timeout_s: float):
        self._handle, self._timeout_s = handle, timeout_s
        self._inbox = ResultInbox()
        self.failed_calls = 0

    def submit(self, items: list[FeedbackItem]) -> None:
        try:
            self._inbox.put(self._handle.remote(items).result(timeout_s=self._timeout_s))
        except Exception:
            self.failed_calls += 1
            logger.warning("feedback call failed", exc_info=True)

    def poll(self) -> list[FeedbackResult]:
        return self._inbox.take()

    def close(self) -> None:
        pass
