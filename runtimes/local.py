"""The local transport: every role in this process, no Ray (the debugging path, like Sample Factory's
serial mode). The skeleton (runtimes/skeleton.py) drives it exactly as it drives the Ray transport.

A call is carried out when the skeleton waits for it: each worker in turn takes the env steps it was
granted (syncing weights and the clock first, as it does on Ray), then the learner trains as the
mode says. All workers' environments live in this process (the first simulation in libsumo, the
others in SUMO servers over TraCI: envs/sumo/connection.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from configs.schema import Config, RunConfig
from core import PolicySnapshot, RoleFailed
from envs.carla.server import launch_for  # plain Python: the supervisor, no Ray
from learners.learner import Learner, LearnerDiverged
from runtimes.contracts import Mode, WorkerFailed
from runtimes.run_state import REPLAY_DIR
from workers.assembly import build_evaluator, in_process_feedback

logger = logging.getLogger(__name__)


class LocalLearner:
    """The Learner in this process, as the skeleton reaches it (runtimes/contracts.py LearnerPort)."""

    def __init__(self, learner: Learner, mode: Mode):
        self.learner, self._mode = learner, mode

    def report(self) -> dict:
        return self.learner.report()

    def start(self) -> None:
        self.learner.check_can_start()

    def train(self, run: RunConfig) -> None:
        try:
            self._mode.train(self.learner, run)
        except LearnerDiverged as exc:
            raise RoleFailed("learner", str(exc)) from exc

    def stop(self) -> None:
        """Nothing trains between steps here."""

    def save(self, directory: Path) -> None:
        self.learner.save(directory)

    def load(self, directory: Path) -> None:
        self.learner.load(directory)

    def max_stream_id(self) -> int:
        return self.learner.replay.max_stream_id()

    def snapshot(self) -> PolicySnapshot:
        self.learner.publish()  # the very latest weights
        return self.learner.sync(-1)[1]


@dataclass(eq=False)  # a call is itself: hashable by identity, as the skeleton keys them
class _Call:
    worker: object
    ticks: int
    report: dict | None = None
    error: WorkerFailed | None = None
    done: bool = False


class LocalTransport:
    def __init__(self, config: Config, mode: Mode, run_dir: Path):
        self.config, self.mode = config, mode
        self.learner = LocalLearner(Learner(config, Path(run_dir) / REPLAY_DIR), mode) if mode.has_learner else None
        self._server = None  # a CARLA server when env.backend is carla (launched with the first worker)
        self._batcher = None  # the in-process feedback model
        self._started = False
        self._killed: set[int] = set()

    def start_worker(self, stream_id: int):
        if not self._started:
            self._server = launch_for(self.config.env)
            self._batcher = in_process_feedback(self.config)
            self._started = True
        learner = self.learner.learner if self.learner is not None else None
        try:
            return self.mode.build_worker(
                self.config,
                stream_id,
                ship=_learner_side(learner.add) if learner else None,
                sync=learner.sync if learner else _no_weights,
                send=self._batcher.send if self._batcher else None,
                server=self._server,
            )
        except Exception as exc:  # noqa: BLE001 - the skeleton's failure policy decides
            _reraise_if_the_runs(exc)
            logger.exception("starting a worker on stream %d failed", stream_id)
            raise WorkerFailed(f"{type(exc).__name__}: {exc}", dead=True) from exc

    def run(self, worker, ticks: int) -> _Call:
        return _Call(worker, ticks)

    def wait(self, calls: list, timeout_s: float, stopping: Callable[[], bool]) -> list:
        """Carries the calls out one after the other (a stop requested meanwhile ends the rest)."""
        for call in calls:
            if not call.done and not stopping():
                self._carry_out(call)
        return [call for call in calls if call.done]

    def _carry_out(self, call: _Call) -> None:
        call.done = True
        if id(call.worker) in self._killed:
            call.error = WorkerFailed("the worker was killed", dead=True)
            return
        try:
            call.worker.run(call.ticks)
            call.report = call.worker.report()
        except Exception as exc:  # noqa: BLE001 - the skeleton's failure policy decides
            _reraise_if_the_runs(exc)
            logger.exception("a worker's call failed")
            call.error = WorkerFailed(f"{type(exc).__name__}: {exc}", dead=False)

    def result(self, call: _Call) -> dict:
        if call.error is not None:
            raise call.error
        return call.report

    def stop_workers(self, workers: list, calls: list, grace_s: float | None) -> list[tuple[list[dict], bool]]:
        """A call not carried out yet is dropped; each worker drains in turn."""
        results = []
        for worker, call in zip(workers, calls):
            reports = [call.report] if call is not None and call.report is not None else []
            if id(worker) in self._killed:
                results.append((reports, False))
                continue
            try:
                worker.drain(grace_s)
                reports.append(worker.report())
                results.append((reports, True))
            except Exception as exc:  # noqa: BLE001 - skipped, as a worker that died while stopping
                _reraise_if_the_runs(exc)
                logger.exception("a worker could not drain while stopping")
                results.append((reports, False))
        return results

    def close_workers(self, workers: list) -> None:
        for worker in workers:
            worker.close()

    def kill_worker(self, worker) -> None:
        """For tests: the worker's next call fails as a dead one's would."""
        self._killed.add(id(worker))

    def evaluate(self, snapshot: PolicySnapshot) -> tuple[dict[str, dict[str, float]], list[dict]]:
        server = self._server or launch_for(self.config.env)
        evaluator = build_evaluator(self.config, server)
        try:
            evaluator.set_policy(snapshot)
            return evaluator.evaluate(), evaluator.step_records()
        finally:
            evaluator.close()
            if server is not self._server and server is not None:
                server.stop()

    def record(self, metrics: dict[str, float]) -> None:
        """The run directory's logs are all there is."""

    def describe_resources(self) -> str:
        return "all roles run in this process"

    def shutdown(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
        if self._server is not None:
            self._server.stop()
            self._server = None


def _no_weights(known_version: int) -> tuple:
    """The sync of a worker without a learner: nothing new, ever."""
    return 0, None


class _LearnerSideError(Exception):
    """A learner call made by a worker failed (its cause): the run's failure, not the worker's."""


def _learner_side(call: Callable) -> Callable:
    def wrapped(*args):
        try:
            return call(*args)
        except Exception as exc:
            raise _LearnerSideError() from exc

    return wrapped


def _reraise_if_the_runs(exc: Exception) -> None:
    """Failures that are the run's, not one worker's, go on to the training loop as they were raised:
    the learner's (a full disk while it journals a chunk, a chunk it refuses)."""
    if isinstance(exc, RoleFailed | LearnerDiverged):
        raise exc
    if isinstance(exc, _LearnerSideError):
        raise exc.__cause__
