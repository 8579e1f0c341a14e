"""The Ray runtime: the same roles as local mode, each in its own actor, driven by the training
loop through the Runtime contract (core.py).

Nothing runs until the first step(): a checkpoint loads into an idle learner, so rows shipped
before the load cannot be dropped. A rollout worker that dies is replaced by a worker on a new
stream (its shipped rows are already in the replay); a slot that keeps failing without ever
reporting stops the run with the cause.

Stopping (finish) is bounded, so that `ray job stop` (SIGTERM, then SIGKILL after
RAY_JOB_STOP_WAIT_TIME_S) leaves a checkpoint: every worker is asked at once to end its run() call
at the next tick, and to drain, and all are waited for together; feedback still unanswered after a
short grace ships unavailable (mask 0), as a late answer would.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import serve

from actors.reporting import RunReport
from actors.run_state import RunCounters, budget_spent
from cluster.actors import EvaluatorActor, WorkerActor
from cluster.metrics import DriverMetrics
from configs.schema import Config
from core import RoleFailed, StepReport

logger = logging.getLogger(__name__)

_WAIT_S = 2.0  # a step waits this long for worker reports
_WAIT_SLICE_S = 0.25  # ... in slices of this, so that a stop requested meanwhile is seen within one
_STALL_WARNING_S = 60.0
# At finish, how long pending rows wait for feedback already on its way: a fast model's answers
# arrive within it, a slow model's queue does not hold up the stop.
DRAIN_GRACE_S = 0.5
# At finish, the most a worker may take to end its call and drain (a CARLA tick that times out takes
# env.carla.tick_timeout_s); one that takes longer is given up on (and killed with the others).
_FINISH_TIMEOUT_S = 120.0
_LEARNER_STOP_TIMEOUT_S = 60.0
_APP_DELETE_POLL_S = 0.1
_APP_DELETE_TIMEOUT_S = 60.0  # serve.delete's own limit


@dataclass
class _Slot:
    actor: object
    stream_id: int
    call: object  # the in-flight run() call


class RayRuntime:
    def __init__(
        self, config: Config, learner, handle, use_gpu: bool, app_name: str | None, janitor=None, on_shutdown=None
    ):
        """`janitor`: the run's ServeAppJanitor (cluster/feedback_service.py), stopped last by
        shutdown(); `on_shutdown`: called at the very end of shutdown() (launch's clean-up of a local
        cluster it started)."""
        self.config = config
        self.learner = learner
        self.handle = handle
        self.use_gpu = use_gpu
        self.app_name = app_name
        self.janitor = janitor
        self._on_shutdown = on_shutdown
        self.counters = RunCounters()
        self.slots: dict[int, _Slot] = {}
        self._reports: dict[int, dict] = {}  # stream id -> its latest report (retired streams kept)
        self._failures_in_a_row: dict[int, int] = {}  # per slot, reset by a report
        self._owns_servers = config.env.backend == "carla" and config.env.carla.launch
        self._metrics = DriverMetrics()
        self._reporting = RunReport()
        self._started = self._finished = self._shut_down = False
        self._stop_requested = False  # a plain attribute: request_stop() may run in a signal handler
        self._learner_report: dict = {}
        self._last_progress = time.monotonic()

    @property
    def env_steps(self) -> int:
        return int(self._learner_report.get("env_steps", 0))

    @property
    def updates(self) -> int:
        return int(self._learner_report.get("learner_updates", 0))

    # ----- starting and stepping ---------------------------------------------------------------
    def _poll_learner(self) -> dict:
        """The learner's report; RoleFailed when its process died or its update loop stopped."""
        try:
            report = ray.get(self.learner.report.remote(), timeout=120)
        except ray.exceptions.RayActorError as exc:
            raise RoleFailed(
                "learner",
                f"its process died ({type(exc).__name__}); every row it had stored is in "
                f"the replay journal, its updates since the last checkpoint are lost: {exc}",
            ) from exc
        except ray.exceptions.GetTimeoutError as exc:
            raise RoleFailed("learner", "it did not answer for 120 s") from exc
        error = report.pop("error")
        if error:
            raise RoleFailed("learner", error)
        return report

    def _start(self) -> None:
        self._learner_report = self._poll_learner()
        self._reporting.start(self.env_steps)
        ray.get(self.learner.start.remote())  # refuses a run directory whose journal it has not loaded
        for index in range(self.config.workers.num_workers):
            self._start_worker(index)
        self._started = True

    def _start_worker(self, index: int) -> None:
        stream = self.counters.new_stream()
        resources = {self.config.workers.server_resource: 1} if self.config.workers.server_resource else None
        actor = WorkerActor.options(num_cpus=1, max_restarts=0, resources=resources).remote(
            self.config, stream, self.learner, self.handle
        )
        self.slots[index] = _Slot(actor, stream, actor.run.remote(self.config.workers.pull_weights_every_steps))

    def step(self) -> StepReport:
        """Wait briefly for worker reports, replace dead workers, return the merged report."""
        if self._finished:
            raise RuntimeError("the runtime has finished collecting; step() is no longer possible")
        if not self._started:
            self._start()
        calls = {slot.call: index for index, slot in self.slots.items()}
        ready = self._wait_for_reports(list(calls))
        self._warn_if_stalled(bool(ready))
        episodes = []
        for ref in ready:
            index = calls[ref]
            report = self._collect(index, ref)
            if report is not None:
                episodes += report["episodes"]
                slot = self.slots[index]
                slot.call = slot.actor.run.remote(self.config.workers.pull_weights_every_steps)
        return self._report(episodes)

    def _wait_for_reports(self, calls: list) -> list:
        """The calls that finished within _WAIT_S: sooner when one finishes, or a stop is requested."""
        deadline = time.monotonic() + _WAIT_S
        while True:
            ready, _ = ray.wait(calls, num_returns=1, timeout=min(_WAIT_SLICE_S, max(0.0, deadline - time.monotonic())))
            if ready or self._stop_requested or time.monotonic() >= deadline:
                return ready

    def request_stop(self) -> None:
        """Make a step() in progress return now (the training loop's SIGINT/SIGTERM handler calls it,
        so that finish() begins within _WAIT_SLICE_S instead of after the step's whole wait). Safe in
        a signal handler: it only sets an attribute."""
        self._stop_requested = True

    def _collect(self, index: int, ref) -> dict | None:
        slot = self.slots[index]
        try:
            report = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
            # Includes an actor whose constructor failed (e.g. its CARLA server never became ready).
            self._poll_learner()  # a worker that failed because the learner died is not the culprit
            logger.warning("rollout worker %d (stream %d) died; starting a replacement: %s", index, slot.stream_id, exc)
            self._replace(index, exc)
            return None
        except ray.exceptions.RayTaskError as exc:  # e.g. its simulator failed beyond a reset
            self._poll_learner()
            logger.error(
                "rollout worker %d (stream %d) failed; starting a replacement:\n%s", index, slot.stream_id, exc
            )
            _stop_all([slot.actor], self._owns_servers)
            self._replace(index, exc)
            return None
        self._failures_in_a_row[index] = 0
        self._reports[slot.stream_id] = report
        return report

    def _report(self, episodes: list) -> StepReport:
        self._learner_report = self._poll_learner()
        report = self._reporting.build(self._learner_report, list(self._reports.values()), episodes, self.counters)
        self._metrics.record(report.metrics)
        return report

    def _replace(self, index: int, error: Exception) -> None:
        """Start a new actor in the slot, unless the slot keeps failing without ever reporting: then
        the cause (a missing CARLA install, a server that never gets ready) will not go away by
        itself, and the run stops with it."""
        retired = self._reports.get(self.slots[index].stream_id)
        if retired is not None:  # a dead worker's unshipped rows are gone: it holds nothing now
            retired["feedback"] = {**retired["feedback"], "pending": 0}
        failures = self._failures_in_a_row.get(index, 0) + 1
        self._failures_in_a_row[index] = failures
        limit = self.config.workers.max_failures_in_a_row
        if failures >= limit:
            raise RuntimeError(
                f"rollout worker slot {index} failed {failures} times in a row without reporting "
                f"(workers.max_failures_in_a_row = {limit}); the last failure:\n{error}"
            ) from error
        self.counters.replaced_workers += 1
        self._start_worker(index)

    def _warn_if_stalled(self, progressed: bool) -> None:
        now = time.monotonic()
        if progressed:
            self._last_progress = now
        elif now - self._last_progress > _STALL_WARNING_S:
            logger.warning(
                "no rollout worker has reported for %.0f s; actors may be waiting for resources. Available: %s",
                now - self._last_progress,
                ray.available_resources(),
            )
            self._last_progress = now

    def done(self) -> bool:
        return budget_spent(self.config.run, self.env_steps, self.updates)

    # ----- stopping, checkpoints, evaluation ---------------------------------------------------
    def finish(self) -> StepReport:
        """Stop collecting and learning: every worker ends its current call at the next tick, ships
        everything it holds (the learner has it all when this returns), and stops. All workers stop
        and drain at the same time; a worker that died or fails here is skipped (a replacement
        would hold nothing to ship)."""
        if not self._started or self._finished:
            return StepReport(self._learner_report)
        episodes = self._stop_workers()
        ray.get(self.learner.stop.remote())
        _stop_all([slot.actor for slot in self.slots.values()], self._owns_servers)
        self.slots = {}
        self._finished = True
        return self._report(episodes)

    def _stop_workers(self) -> list:
        """Ask every worker at once to stop and to drain, wait for all of them together; the
        episodes they finished."""
        slots = list(self.slots.items())
        for _, slot in slots:
            slot.actor.request_stop.remote()  # reaches a worker in the middle of its run() call
        drains = [slot.actor.drain.remote(DRAIN_GRACE_S) for _, slot in slots]  # each runs after that call
        pending = [slot.call for _, slot in slots] + drains
        _, late = ray.wait(pending, num_returns=len(pending), timeout=_FINISH_TIMEOUT_S)
        if late:
            logger.warning(
                "%d rollout worker call(s) did not end within %.0f s of the stop; their workers are given up on",
                len(late),
                _FINISH_TIMEOUT_S,
            )
        late = set(late)
        episodes = []
        for (index, slot), drain in zip(slots, drains):
            for ref, what in ((slot.call, "end its call"), (drain, "drain")):
                if ref in late:
                    break
                report, alive = self._final_report(index, ref, what)
                if report is not None:
                    self._reports[slot.stream_id] = report
                    episodes += report["episodes"]
                if not alive:
                    break
        return episodes

    def _final_report(self, index: int, ref, what: str) -> tuple[dict | None, bool]:
        """A stopping worker's report from `ref` (None, logged, when it failed) and whether its actor
        is still alive. A learner that died meanwhile fails the run by name: the worker's failure is
        then not its own."""
        slot = self.slots[index]
        try:
            return ray.get(ref), True
        except ray.exceptions.RayError as exc:
            self._poll_learner()
            logger.warning(
                "rollout worker %d (stream %d) could not %s while stopping: %s", index, slot.stream_id, what, exc
            )
            dead = isinstance(exc, ray.exceptions.RayActorError)
            retired = self._reports.get(slot.stream_id)
            if dead and retired is not None:  # a dead worker's unshipped rows are gone: it holds nothing now
                retired["feedback"] = {**retired["feedback"], "pending": 0}
            return None, not dead

    def save(self, directory: Path) -> None:
        ray.get(self.learner.save.remote(str(directory)))
        self.counters.save(Path(directory))

    def load(self, directory: Path) -> None:
        if self._started:
            raise RuntimeError("load() must come before the first step(): workers are already collecting")
        counters = RunCounters.load(Path(directory))
        ray.get(self.learner.load.remote(str(directory)))
        # Streams started after the checkpoint shipped rows too (they are in the journal): skip them.
        counters.next_stream_id = max(counters.next_stream_id, ray.get(self.learner.max_stream_id.remote()) + 1)
        self.counters = counters
        self._learner_report = self._poll_learner()

    def evaluate(self) -> dict:
        """Stop collecting and learning (everything shipped is in the replay), then drive the suite."""
        self.finish()
        ray.get(self.learner.publish.remote())
        _, snapshot = ray.get(self.learner.sync.remote(-1))
        resources = {self.config.workers.server_resource: 1} if self.config.workers.server_resource else None
        evaluator = EvaluatorActor.options(num_cpus=1, resources=resources).remote(self.config)
        try:
            return ray.get(evaluator.evaluate.remote(snapshot))
        finally:
            _stop_all([evaluator], self._owns_servers)

    def kill_worker(self, index: int) -> None:
        """For tests and drills: kill a rollout worker; the next step() replaces it."""
        ray.kill(self.slots[index].actor, no_restart=True)

    def worker_reports(self) -> dict[int, dict]:
        """The latest report of every stream, retired ones included (for drills and tests)."""
        return dict(self._reports)

    def shutdown(self) -> None:
        """Stop every actor of this run and delete its Serve app; a second call does nothing. The
        janitor goes last: if this process is killed half-way, it still deletes the app."""
        if self._shut_down:
            return
        self._shut_down = True
        _stop_all([slot.actor for slot in self.slots.values()], self._owns_servers)
        if self.app_name is not None:  # a Serve app outlives the job otherwise; deleted meanwhile
            serve.delete(self.app_name, _blocking=False)
        try:
            ray.get(self.learner.stop.remote(), timeout=_LEARNER_STOP_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - already dead or stopped
            logger.debug("learner stop", exc_info=True)
        ray.kill(self.learner)
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
