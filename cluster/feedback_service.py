"""The feedback service: a Ray Serve deployment that micro-batches feedback items from all
workers, and the workers' transport to it through a DeploymentHandle.

Requests are bundles (a worker's items of a few ticks); `@serve.batch` counts items, not bundles,
through `batch_size_fn`, and `max_ongoing_requests` is sized so batches can really fill.
"""
from __future__ import annotations

import logging

from ray import serve

from configs.schema import FeedbackConfig
from inference.feedback import FeedbackItem, FeedbackResult, unexpired

logger = logging.getLogger(__name__)

APP_PREFIX = "mentor-feedback"  # each run deploys its own app: mentor-feedback-<run id>


def _items_in(bundles: list) -> int:
    """Items in a batch of bundles. Must never raise: Serve hangs later requests if it does."""
    try:
        return sum(len(bundle) for bundle in bundles)
    except Exception:  # noqa: BLE001 - a malformed request still counts as one
        return len(bundles)


def _actor_options(config: FeedbackConfig, use_gpu: bool) -> dict:
    options = {"num_cpus": config.replica_cpus, "num_gpus": config.gpu_fraction if use_gpu else 0.0}
    if {"vlm", "drivevlm"} & set(config.model.split("+")) and config.vlm.pip:
        # vLLM pins its own torch: on a GPU cluster its replica gets its own environment rather than
        # the learner's (drivevlm's describer is the same VLM advisor). An empty pip list: the run's
        # environment has vLLM already (on a CPU, scripts/bootstrap_vlm.sh's).
        options["runtime_env"] = {"pip": list(config.vlm.pip)}
    return options


def feedback_app(config: FeedbackConfig, seed: int, use_gpu: bool):
    """The Serve application for `config`: bind it with serve.run(..., name=<the run's app name>)."""
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

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=config.batch_wait_timeout_s,
                     max_concurrent_batches=config.max_concurrent_batches, batch_size_fn=_items_in)
        async def answer(self, bundles: list[list[FeedbackItem]]) -> list[list[FeedbackResult]]:
            """A model error fails every call of the batch: the workers count it (failed_calls) and
            its items expire unanswered (mask 0)."""
            items = unexpired([item for bundle in bundles for item in bundle])  # no model time for late ones
            by_key = {r.key: r for r in self._model(items)} if items else {}
            return [[by_key[i.key] for i in bundle if i.key in by_key] for bundle in bundles]

        async def __call__(self, bundle: list[FeedbackItem]) -> list[FeedbackResult]:
            return await self.answer(bundle)

    return FeedbackDeployment.bind()


def serve_sender(handle):
    """The workers' transport to the deployment (actors/feedback_client.py): a call per bundle
    through the DeploymentHandle, its answers awaited with DeploymentResponse.result."""

    def send(items: list[FeedbackItem]):
        response = handle.remote(items)
        return lambda timeout_s: response.result(timeout_s=timeout_s)

    return send
