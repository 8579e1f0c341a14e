"""The feedback service: a Ray Serve deployment that micro-batches feedback items from all
workers, and the workers' transport to it through a DeploymentHandle.

Requests are bundles (a worker's items of a few ticks); `@serve.batch` counts items, not bundles,
through `batch_size_fn`, and `max_ongoing_requests` is sized so batches can really fill.

A Serve application belongs to Serve's detached controller, not to the driver that deployed it, so
it would outlive a driver that is killed (`ray job stop` past its wait, the OOM killer). Each run
that joins a cluster therefore starts a `ServeAppJanitor`: a detached actor named after the run
that deletes the run's app, and only that one, once the driver is gone, then exits.
"""

from __future__ import annotations

import logging
import threading
import time

import ray
from ray import serve

from configs.schema import FeedbackConfig
from core.feedback import FeedbackItem, FeedbackResult, unexpired

logger = logging.getLogger(__name__)

APP_PREFIX = "mentor-feedback"  # each run deploys its own app: mentor-feedback-<run id>
JANITOR_PREFIX = "mentor-janitor"  # each run's janitor: mentor-janitor-<run id>
JANITOR_NAMESPACE = "mentor"  # a detached actor needs a namespace that outlives the driver's anonymous one
_JANITOR_POLL_S = 1.0  # how often a janitor asks whether the run's learner is still alive
_JANITOR_RETIRE_TIMEOUT_S = 30.0  # how long launch waits for a previous janitor of the run to be gone
# The app is deleted only once the workers have stopped, so nobody waits for a replica's answers by
# then: a replica checks for requests still in progress this often while it shuts down (Serve's
# default, 2 s, is most of a `ray job stop`'s wait), and is killed after at most this long.
_REPLICA_SHUTDOWN_POLL_S = 0.1
_REPLICA_SHUTDOWN_TIMEOUT_S = 0.5


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
        graceful_shutdown_wait_loop_s=_REPLICA_SHUTDOWN_POLL_S,
        graceful_shutdown_timeout_s=_REPLICA_SHUTDOWN_TIMEOUT_S,
    )
    class FeedbackDeployment:
        def __init__(self):
            from feedback.registry import build_model

            self._model = build_model(config, seed)

        @serve.batch(
            max_batch_size=max_batch,
            batch_wait_timeout_s=config.batch_wait_timeout_s,
            max_concurrent_batches=config.max_concurrent_batches,
            batch_size_fn=_items_in,
        )
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
    """The workers' transport to the deployment (workers/feedback_client.py): a call per bundle
    through the DeploymentHandle, its answers awaited with DeploymentResponse.result."""

    def send(items: list[FeedbackItem]):
        response = handle.remote(items)
        return lambda timeout_s: response.result(timeout_s=timeout_s)

    return send


# ------------------------------------------------------------------------------------ the janitor


def janitor_name(run_id: str) -> str:
    return f"{JANITOR_PREFIX}-{run_id}"


@ray.remote(num_cpus=0, max_restarts=0)
class ServeAppJanitor:
    """Deletes one run's Serve app once that run's driver is gone, then ends itself.

    The driver's death is seen through the learner: a non-detached actor is owned by the driver
    that created it, and Ray destroys an actor whose owner died (or whose job finished), so a call
    to it then fails with RayActorError. A learner that dies while its driver lives ends the run
    too (the driver stops naming it), so deleting the app then takes nothing from a live run. A
    learner that is merely busy (a call that does not answer in time) counts as alive.

    The watch starts in the constructor, on a thread: the actor's creation belongs to the GCS (it
    is detached) and happens even if the driver dies first, whereas a call the driver submitted
    would be lost with the driver while the actor was still starting."""

    def __init__(self, app_name: str, learner):
        self._app_name, self._learner = app_name, learner
        self._thread = threading.Thread(target=self._watch, name="janitor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        """Wait for the learner's death, delete the app, end this actor (RayTransport.shutdown kills
        it first when the run ends normally)."""
        while _alive(self._learner):
            time.sleep(_JANITOR_POLL_S)
        logger.warning("the run's learner is gone (its driver died or stopped): deleting Serve app %s", self._app_name)
        try:
            serve.delete(self._app_name)
        except Exception:
            logger.exception("could not delete Serve app %s", self._app_name)
        finally:
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


def _alive(actor) -> bool:
    """False once `actor` is dead; an actor that does not answer within the poll is alive."""
    try:
        ray.get(actor.__ray_ready__.remote(), timeout=_JANITOR_POLL_S)
    except ray.exceptions.GetTimeoutError:
        return True
    except ray.exceptions.RayActorError:
        return False
    return True


def start_janitor(run_id: str, app_name: str, learner):
    """The run's janitor, watching `learner`; a janitor left by an earlier driver of the same run
    (a resumed run keeps its id, and so its app's name) is stopped first, so that it cannot delete
    the app deployed after it."""
    retire_janitor(run_id)
    return ServeAppJanitor.options(name=janitor_name(run_id), namespace=JANITOR_NAMESPACE, lifetime="detached").remote(
        app_name, learner
    )


def retire_janitor(run_id: str, timeout_s: float = _JANITOR_RETIRE_TIMEOUT_S) -> None:
    """Kill the run's janitor, if any, and wait until its name is free."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            janitor = ray.get_actor(janitor_name(run_id), namespace=JANITOR_NAMESPACE)
        except ValueError:  # no actor of that name (left)
            return
        ray.kill(janitor, no_restart=True)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the janitor {janitor_name(run_id)} of an earlier driver of this run did not go "
                f"away within {timeout_s:g} s"
            )
        time.sleep(0.1)
