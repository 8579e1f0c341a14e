"""The runtime skeleton: one implementation of core.Runtime for every mode and transport.

It owns what every run shares: the clock (env steps the workers took, updates the learner made), the
budget (each worker call is granted at most the env steps the budget still has, so a run stops at
the same env step whether its workers run in this process or on a cluster), the failure policy (a
worker that fails is replaced by one on a new stream; a slot that fails workers.max_failures_in_a_row
times without a report stops the run), the checkpoint (the learner and the counters) and the
evaluation. The mode says where experience comes from and where it goes, the transport how the
roles are reached (runtimes/contracts.py).

Nothing runs until the first step(): a checkpoint loads into an idle learner, so rows shipped
before the load cannot be dropped. Stopping (finish) is bounded, so that `ray job stop` (SIGTERM,
then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S) leaves a checkpoint: every worker ends its call at the
next tick and drains, all at once; after a stop signal, feedback still unanswered after
DRAIN_GRACE_S ships unavailable (mask 0), as a late answer would.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from configs.schema import Config
from core import StepReport
from runtimes.contracts import Mode, Transport, WorkerFailed
from runtimes.reporting import RunReport
from runtimes.run_state import RunCounters, budget_spent

logger = logging.getLogger(__name__)

WAIT_S = 2.0  # a step waits at most this long for worker reports
# At a finish that a stop signal asked for, how long pending rows wait for feedback already on its
# way: a fast model's answers arrive within it, a slow model's queue does not hold up the stop. A
# run that ends at its budget waits for each answer up to its deadline (feedback.deadline_s).
DRAIN_GRACE_S = 0.5
_STALL_WARNING_S = 60.0


@dataclass
class _Slot:
    worker: object  # the transport's handle
    stream_id: int
    call: object = None  # the call in flight (None: idle)
    granted: int = 0  # env steps the call in flight may take


class Runtime:
    """A run's roles driven through one transport, in one mode."""

    def __init__(self, config: Config, mode: Mode, transport: Transport, first_stream: int = 0, env_steps: int = 0):
        """`first_stream` and `env_steps`: where a run that resumes from something other than a
        checkpoint starts (a collection into a directory that already holds shards)."""
        self.config, self.mode, self.transport = config, mode, transport
        self.counters = RunCounters(next_stream_id=first_stream)
        self.slots: dict[int, _Slot] = {}
        self._reports: dict[int, dict] = {}  # stream id -> its latest report (retired streams kept)
        self._failures_in_a_row: dict[int, int] = {}  # per slot, reset by a report
        self._reporting = RunReport()
        self._learner_report: dict = {}
        self._steps_before = env_steps  # env steps taken before this runtime's workers started
        self._started = self._finished = self._shut_down = False
        self._stop_requested = False  # a plain attribute: request_stop() runs in a signal handler
        self._last_progress = time.monotonic()
        self._evaluation_steps: list[dict] = []

    # ----- the clock and the budget ------------------------------------------------------------
    @property
    def env_steps(self) -> int:
        """Env steps in the run: those the learner holds, or (without a learner) those taken."""
        if self.transport.learner is not None:
            return int(self._learner_report.get("env_steps", 0))
        return self._steps_taken()

    @property
    def updates(self) -> int:
        return int(self._learner_report.get("learner_updates", 0))

    def _steps_taken(self) -> int:
        return self._steps_before + sum(int(r["env_steps"]) for r in self._reports.values())

    def done(self) -> bool:
        return budget_spent(self.config.run, self._steps_taken(), self.updates)

    def _grant(self) -> int:
        """Env steps for one more call: a pull interval, no more than the budget leaves."""
        ticks = self.config.workers.pull_weights_every_steps
        total = self.config.run.total_env_steps
        if not total:
            return ticks
        in_flight = sum(slot.granted for slot in self.slots.values())
        return max(0, min(ticks, total - self._steps_taken() - in_flight))

    # ----- starting and stepping ---------------------------------------------------------------
    def _start(self) -> None:
        learner = self.transport.learner
        if learner is not None:
            self._learner_report = learner.report()
            self._steps_before = self.env_steps
            learner.start()  # refuses a run directory whose journal it has not loaded
        self._reporting.start(self.env_steps)
        for index in range(self.mode.num_workers(self.config)):
            self._start_worker(index)
        self._started = True

    def _start_worker(self, index: int) -> None:
        stream = self.counters.new_stream()
        try:
            worker = self.transport.start_worker(stream)
        except WorkerFailed as exc:
            self.slots[index] = _Slot(None, stream)
            self._replace(index, exc)
            return
        self.slots[index] = _Slot(worker, stream)

    def step(self) -> StepReport:
        """Give idle workers their next calls, wait briefly for reports, replace failed workers,
        then (a learner in this process) learn; the merged report."""
        if self._finished:
            raise RuntimeError("the runtime has finished collecting; step() is no longer possible")
        if not self._started:
            self._start()
        self._hand_out()
        calls = {slot.call: index for index, slot in self.slots.items() if slot.call is not None}
        ready = self.transport.wait(list(calls), WAIT_S, lambda: self._stop_requested) if calls else []
        self._warn_if_stalled(bool(ready) or not calls)
        episodes = []
        for call in ready:
            report = self._collect(calls[call], call)
            if report is not None:
                episodes += report["episodes"]
        self._hand_out()
        if self.transport.learner is not None:
            self.transport.learner.train(self.config.run)
        return self._report(episodes)

    def _hand_out(self) -> None:
        if self._stop_requested:
            return
        for slot in self.slots.values():
            if slot.call is None and slot.worker is not None:
                ticks = self._grant()
                if ticks:
                    slot.call, slot.granted = self.transport.run(slot.worker, ticks), ticks

    def _collect(self, index: int, call) -> dict | None:
        slot = self.slots[index]
        slot.call, slot.granted = None, 0
        try:
            report = self.transport.result(call)
        except WorkerFailed as exc:
            self._poll_learner()  # a worker that failed because the learner died is not the culprit
            logger.warning(
                "%s worker %d (stream %d) failed; starting a replacement: %s",
                self.mode.name,
                index,
                slot.stream_id,
                exc.cause,
            )
            if not exc.dead:
                self.transport.close_workers([slot.worker])
            self._replace(index, exc)
            return None
        self._failures_in_a_row[index] = 0
        self._reports[slot.stream_id] = report
        return report

    def _replace(self, index: int, error: WorkerFailed) -> None:
        """A new worker in the slot on a new stream, unless the slot keeps failing without ever
        reporting: then the cause (a missing CARLA install, a server that never gets ready) will
        not go away by itself, and the run stops with it."""
        self._retire(self.slots[index].stream_id)
        failures = self._failures_in_a_row.get(index, 0) + 1
        self._failures_in_a_row[index] = failures
        limit = self.config.workers.max_failures_in_a_row
        if failures >= limit:
            raise RuntimeError(
                f"{self.mode.name} worker slot {index} failed {failures} times in a row without reporting "
                f"(workers.max_failures_in_a_row = {limit}); the last failure:\n{error.cause}"
            ) from error
        self.counters.replaced_workers += 1
        self._start_worker(index)

    def _retire(self, stream_id: int) -> None:
        """A dead worker's unshipped rows are gone: its last report holds nothing pending any more."""
        retired = self._reports.get(stream_id)
        if retired is not None:
            retired["feedback"] = {**retired["feedback"], "pending": 0}

    def _poll_learner(self) -> None:
        if self.transport.learner is not None:
            self._learner_report = self.transport.learner.report()

    def _report(self, episodes: list) -> StepReport:
        self._poll_learner()
        report = self._reporting.build(self._learner_numbers(), list(self._reports.values()), episodes, self.counters)
        self.transport.record(report.metrics)
        return report

    def _learner_numbers(self) -> dict:
        """The learner's report; without a learner, the env steps taken (and no updates)."""
        if self.transport.learner is not None:
            return dict(self._learner_report)
        return {"env_steps": float(self._steps_taken()), "learner_updates": 0.0}

    def _warn_if_stalled(self, progressed: bool) -> None:
        now = time.monotonic()
        if progressed:
            self._last_progress = now
        elif now - self._last_progress > _STALL_WARNING_S:
            logger.warning(
                "no worker has reported for %.0f s; they may be waiting for resources (%s)",
                now - self._last_progress,
                self.transport.describe_resources(),
            )
            self._last_progress = now

    def request_stop(self) -> None:
        """Make a step() in progress return now (the training loop's SIGINT/SIGTERM handler calls it,
        so that finish() begins at once instead of after the step's whole wait)."""
        self._stop_requested = True

    # ----- stopping, checkpoints, evaluation ---------------------------------------------------
    def finish(self) -> StepReport:
        """Stop collecting and learning: every worker ends its call at the next tick, hands on
        everything it holds (the learner or the dataset has it all when this returns), and stops,
        all at the same time; a worker that died or fails here is skipped."""
        if not self._started or self._finished:
            self._poll_learner()
            return StepReport(self._learner_numbers())
        slots = [slot for slot in self.slots.values() if slot.worker is not None]
        grace_s = DRAIN_GRACE_S if self._stop_requested else None
        results = self.transport.stop_workers([slot.worker for slot in slots], [slot.call for slot in slots], grace_s)
        episodes = []
        for slot, (reports, alive) in zip(slots, results):
            for report in reports:
                self._reports[slot.stream_id] = report
                episodes += report["episodes"]
            if not alive:
                self._retire(slot.stream_id)
            slot.call, slot.granted = None, 0
        if self.transport.learner is not None:
            self.transport.learner.stop()
        self.transport.close_workers([slot.worker for slot in slots])
        self.slots = {}
        self._finished = True
        return self._report(episodes)

    def save(self, directory: Path) -> None:
        if self.transport.learner is not None:
            self.transport.learner.save(Path(directory))
            self._poll_learner()  # env_steps and updates as saved (what the checkpoint's marker says)
        self.counters.save(Path(directory))

    def load(self, directory: Path) -> None:
        if self._started:
            raise RuntimeError("load() must come before the first step(): workers are already collecting")
        if self.transport.learner is None:
            raise RuntimeError(f"a {self.mode.name} run has no checkpoint to load")
        counters = RunCounters.load(Path(directory))
        self.transport.learner.load(Path(directory))
        # Streams started after the checkpoint shipped rows too (they are in the journal): skip them.
        counters.next_stream_id = max(counters.next_stream_id, self.transport.learner.max_stream_id() + 1)
        self.counters = counters
        self._poll_learner()
        self._steps_before = self.env_steps

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Stop collecting (the evaluation sees the final weights), then drive the evaluation suite."""
        self.finish()
        if not self.mode.evaluates:
            return {}
        rows, self._evaluation_steps = self.transport.evaluate(self.transport.learner.snapshot())
        return rows

    def evaluation_steps(self) -> list[dict]:
        """The last evaluation's per-step records (workers/evaluation.py step_records)."""
        return list(self._evaluation_steps)

    def kill_worker(self, index: int) -> None:
        """For tests and drills: kill a worker; the next step() replaces it."""
        self.transport.kill_worker(self.slots[index].worker)

    def worker_reports(self) -> dict[int, dict]:
        """The latest report of every stream, retired ones included (for drills and tests)."""
        return dict(self._reports)

    def shutdown(self) -> None:
        """Stop every role of this run; a second call does nothing."""
        if self._shut_down:
            return
        self._shut_down = True
        self.transport.close_workers([slot.worker for slot in self.slots.values() if slot.worker is not None])
        self.slots = {}
        self.transport.shutdown()
