"""The Ray transport: each role in its own actor (cluster/actors.py), reached by remote calls. The
runtime skeleton (runtimes/skeleton.py) drives it exactly as it drives the local transport; this file
only carries calls and knows how actors die, stop and are cleaned up.

Stopping is bounded: every worker is asked at once to end its run() call at the next tick (a
request_stop in a concurrency group of its own reaches it mid-call), and to drain; all are waited for
together, so that `ray job stop` (SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S) leaves a
checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import ray
from ray import serve

from cluster.actors import EvaluatorActor, WorkerActor
from cluster.metrics import DriverMetrics
from configs.schema import Config, RunConfig
from core import PolicySnapshot, RoleFailed
from runtimes.contracts import Mode, WorkerFailed

logger = logging.getLogger(__name__)

_WAIT_SLICE_S = 0.25  # a wait looks at the stop request this often
# At finish, the most a worker may take to end its call and drain (a CARLA tick that times out takes
# env.carla.tick_timeout_s); one that takes longer is given up on (and killed with the others).
_FINISH_TIMEOUT_S = 120.0
_LEARNER_TIMEOUT_S = 120.0
_LEARNER_STOP_TIMEOUT_S = 60.0
_APP_DELETE_POLL_S = 0.1
_APP_DELETE_TIMEOUT_S = 60.0  # serve.delete's own limit


class RayLearner:
    """The LearnerActor as the skeleton reaches it (runtimes/contracts.py LearnerPort). It trains on
    its own thread from start() to stop()."""

    def __init__(self, actor):
        self.actor = actor

    def report(self) -> dict:
        """The learner's report; RoleFailed when its process died or its update loop stopped."""
        try:
            report = ray.get(self.actor.report.remote(), timeout=_LEARNER_TIMEOUT_S)
        except ray.exceptions.RayActorError as exc:
            raise RoleFailed(
                "learner",
                f"its process died ({type(exc).__name__}); every row it had stored is in "
                f"the replay journal, its updates since the last checkpoint are lost: {exc}",
            ) from exc
        except ray.exceptions.GetTimeoutError as exc:
            raise RoleFailed("learner", f"it did not answer for {_LEARNER_TIMEOUT_S:.0f} s") from exc
        error = report.pop("error")
        if error:
            raise RoleFailed("learner", error)
        return report

    def start(self) -> None:
        ray.get(self.actor.start.remote())  # refuses a run directory whose journal it has not loaded

    def train(self, run: RunConfig) -> None:
        """It trains on its own thread."""

    def stop(self) -> None:
        ray.get(self.actor.stop.remote())

    def save(self, directory: Path) -> None:
        ray.get(self.actor.save.remote(str(directory)))

    def load(self, directory: Path) -> None:
        ray.get(self.actor.load.remote(str(directory)))

    def max_stream_id(self) -> int:
        return ray.get(self.actor.max_stream_id.remote())

    def snapshot(self) -> PolicySnapshot:
        ray.get(self.actor.publish.remote())
        return ray.get(self.actor.sync.remote(-1))[1]


class RayTransport:
    def __init__(
        self,
        config: Config,
        mode: Mode,
        learner_actor,
        feedback_handle,
        use_gpu: bool = False,
        app_name: str | None = None,
        janitor=None,
        on_shutdown: Callable[[], None] | None = None,
    ):
        """`learner_actor`: the run's LearnerActor (None for a mode without a learner);
        `feedback_handle`: the Serve app's handle (None without feedback); `janitor`: the run's
        ServeAppJanitor (cluster/feedback_service.py), stopped last by shutdown(); `on_shutdown`:
        called at the very end of shutdown() (launch's clean-up of a local cluster it started)."""
        self.config, self.mode = config, mode
        self.learner = RayLearner(learner_actor) if learner_actor is not None else None
        self.handle, self.use_gpu, self.app_name, self.janitor = feedback_handle, use_gpu, app_name, janitor
        self._on_shutdown = on_shutdown
        self._owns_servers = config.env.backend == "carla" and config.env.carla.launch
        self._metrics = DriverMetrics()
        self._shut_down = False

    @property
    def learner_actor(self):
        return self.learner.actor if self.learner is not None else None

    # ----- workers -----------------------------------------------------------------------------
    def start_worker(self, stream_id: int):
        """An actor that builds the mode's worker; a constructor that fails shows at its first call."""
        resources = {self.config.workers.server_resource: 1} if self.config.workers.server_resource else None
        return WorkerActor.options(num_cpus=1, max_restarts=0, resources=resources).remote(
            self.config, self.mode.name, stream_id, self.learner_actor, self.handle
        )

    def run(self, worker, ticks: int):
        return worker.run.remote(ticks)

    def wait(self, calls: list, timeout_s: float, stopping: Callable[[], bool]) -> list:
        """The calls that finished within `timeout_s`: sooner when one finishes, or a stop is requested."""
        deadline = time.monotonic() + timeout_s
        while True:
            ready, _ = ray.wait(calls, num_returns=1, timeout=min(_WAIT_SLICE_S, max(0.0, deadline - time.monotonic())))
            if ready or stopping() or time.monotonic() >= deadline:
                return ready

    def result(self, call) -> dict:
        try:
            return ray.get(call)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
            # Includes an actor whose constructor failed (e.g. its CARLA server never became ready).
            raise WorkerFailed(f"its process died: {exc}", dead=True) from exc
        except ray.exceptions.RayTaskError as exc:  # e.g. its simulator failed beyond a reset
            raise WorkerFailed(str(exc), dead=False) from exc

    def stop_workers(self, workers: list, calls: list, grace_s: float | None) -> list[tuple[list[dict], bool]]:
        for worker in workers:
            worker.request_stop.remote()  # reaches a worker in the middle of its run() call
        drains = [worker.drain.remote(grace_s) for worker in workers]  # each runs after that call
        pending = [call for call in calls if call is not None] + drains
        _, late = ray.wait(pending, num_returns=len(pending), timeout=_FINISH_TIMEOUT_S)
        if late:
            logger.warning(
                "%d worker call(s) did not end within %.0f s of the stop; their workers are given up on",
                len(late),
                _FINISH_TIMEOUT_S,
            )
        late = set(late)
        results = []
        for call, drain in zip(calls, drains):
            reports, alive = [], True
            for ref, what in ((call, "end its call"), (drain, "drain")):
                if ref is None:
                    continue
                if ref in late:
                    break
                try:
                    reports.append(ray.get(ref))
                except ray.exceptions.RayError as exc:
                    logger.warning("a worker could not %s while stopping: %s", what, exc)
                    if isinstance(exc, ray.exceptions.RayActorError):
                        alive = False
                        break
            results.append((reports, alive))
        return results

    def close_workers(self, workers: list) -> None:
        _stop_all(workers, self._owns_servers)

    def kill_worker(self, worker) -> None:
        ray.kill(worker, no_restart=True)

    def describe_resources(self) -> str:
        return f"available: {ray.available_resources()}"

    # ----- evaluation and shutdown -------------------------------------------------------------
    def evaluate(self, snapshot: PolicySnapshot) -> tuple[dict[str, dict[str, float]], list[dict]]:
        resources = {self.config.workers.server_resource: 1} if self.config.workers.server_resource else None
        evaluator = EvaluatorActor.options(num_cpus=1, resources=resources).remote(self.config)
        try:
            return ray.get(evaluator.evaluate.remote(snapshot))
        finally:
            _stop_all([evaluator], self._owns_servers)

    def record(self, metrics: dict[str, float]) -> None:
        """The driver's gauges on the Ray dashboard."""
        self._metrics.record(metrics)

    def shutdown(self) -> None:
        """Stop the learner and delete this run's Serve app; a second call does nothing. The janitor
        goes last: if this process is killed half-way, it still deletes the app."""
        if self._shut_down:
            return
        self._shut_down = True
        if self.app_name is not None:  # a Serve app outlives the job otherwise; deleted meanwhile
            serve.delete(self.app_name, _blocking=False)
        if self.learner is not None:
            try:
                ray.get(self.learner.actor.stop.remote(), timeout=_LEARNER_STOP_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - already dead or stopped
                logger.debug("learner stop", exc_info=True)
            ray.kill(self.learner.actor)
        if self.app_name is not None:
            _wait_until_deleted(self.app_name)
        if self.janitor is not None:
            ray.kill(self.janitor, no_restart=True)
        if self.config.run.shutdown_ray:
            ray.shutdown()
        if self._on_shutdown is not None:
            self._on_shutdown()


def _wait_until_deleted(app_name: str, timeout_s: float = _APP_DELETE_TIMEOUT_S) -> None:
    """Wait for Serve to finish deleting the app, polling more often than serve.delete's own
    blocking wait (once a second), which is a third of `ray job stop`'s default wait."""
    deadline = time.monotonic() + timeout_s
    while app_name in serve.status().applications:
        if time.monotonic() > deadline:
            logger.warning(
                "Serve app %s is still being deleted after %.0f s; Serve goes on deleting it", app_name, timeout_s
            )
            return
        time.sleep(_APP_DELETE_POLL_S)


def _stop_all(actors, graceful: bool, timeout_s: float = 60.0) -> None:
    """Kill actors; `graceful` first lets them close their envs and stop their CARLA servers (a
    killed process leaves the server it started running). A close waits for the actor's current
    call, so all are asked at once and waited for together."""
    if graceful:
        closing = [actor.close.remote() for actor in actors]
        try:
            ray.wait(closing, num_returns=len(closing), timeout=timeout_s)
        except Exception:  # noqa: BLE001 - dead or failed actors: the kill below is what matters
            logger.debug("closing actors before the kill failed", exc_info=True)
    for actor in actors:
        ray.kill(actor)
