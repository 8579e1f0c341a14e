"""The loops that drive a runtime (runtimes/skeleton.py): `train` and `collect`.

The training loop, in the order a run goes: checkpoint the new run (nothing collected yet), step
the runtime until its budget is spent (checkpointing every learner.checkpoint_every_updates updates
and run.checkpoint_every_s seconds), stop collecting, checkpoint, evaluate.

Ctrl-C or SIGTERM (what `ray job stop` sends) ends the loop at the next step: the workers ship what
they hold, a checkpoint is written, and the run can be resumed with `train.py --resume`. When a role
the run cannot go on without fails (the learner dies or diverges), the run stops naming it, with the
last checkpoint to resume from.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from configs.schema import Config
from core import RoleFailed, Runtime, StepReport
from runner.checkpoint import CheckpointError, checkpoint_info, find_checkpoint, write_checkpoint
from runner.disk import DiskGuard
from runner.run_dir import RunLog, plot_learning_curve

logger = logging.getLogger(__name__)

EVALUATION_STEPS = "evaluation_steps.parquet"  # every step of the run's final evaluation


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM: the run stopped early with a checkpoint."""

    def __init__(self, signal_name: str, checkpoint: Path):
        super().__init__(
            f"{signal_name}: stopped with a checkpoint at {checkpoint}; continue with "
            f"train.py --resume {checkpoint.parent}"
        )
        self.signal_name, self.checkpoint = signal_name, checkpoint


class RunFailed(Exception):
    """A role the run needs failed; the message says which, why, and where to resume from."""


class _StopSignals:
    """The first SIGINT/SIGTERM asks the loop to stop at its next step; a second one interrupts at once."""

    def __init__(self, on_stop):
        self.received: str | None = None
        self._previous = {}
        self._on_stop = on_stop  # Runtime.request_stop: the step in progress returns at once

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:  # the second one: do not wait any longer
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        self._on_stop()
        logger.warning(
            "%s: stopping at the next step (the workers ship what they hold, then a checkpoint); "
            "send it again to stop at once",
            self.received,
        )

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(config: Config, log: RunLog, runtime: Runtime) -> dict:
    """Collect and learn until run.total_env_steps (or run.total_updates), then the evaluation table."""
    started = time.monotonic()
    disk = DiskGuard(log.dir)
    last = _Checkpoints(config, log.dir, runtime, disk)
    last.write_first()
    full = None
    with _StopSignals(runtime.request_stop) as stop:
        try:
            while not runtime.done() and stop.received is None:
                record(log, runtime.step(), runtime, config, started)
                last.maybe_write()
                full = disk.short()
                if full is not None:  # stop while a checkpoint still fits
                    break
                if config.run.time_limit_s and time.monotonic() - started > config.run.time_limit_s:
                    logger.info(
                        "time limit of %.0f s reached at %d env steps", config.run.time_limit_s, runtime.env_steps
                    )
                    break
        except RoleFailed as exc:
            raise RunFailed(
                f"{exc} (at {runtime.env_steps} env steps, {runtime.updates} updates). {last.advice()}"
            ) from exc
        record(log, runtime.finish(), runtime, config, started)  # every worker's last rows and episodes
        checkpoint = last.write()
        if full is not None:
            raise RunFailed(f"{full} (stopped with a checkpoint at {runtime.env_steps} env steps)")
        if stop.received is not None:
            raise RunInterrupted(stop.received, checkpoint)
    rows = runtime.evaluate()
    log.write_json("evaluation.json", rows)
    write_steps(log.dir / EVALUATION_STEPS, runtime.evaluation_steps())
    curve = plot_learning_curve(log.dir)
    logger.info("run directory: %s%s", log.dir, f" (learning curve: {curve.name})" if curve else "")
    return rows


class _Checkpoints:
    """When to checkpoint (updates or wall clock) and what the last one was."""

    def __init__(self, config: Config, run_dir: Path, runtime: Runtime, disk: DiskGuard):
        self.config, self.run_dir, self.runtime, self.disk = config, run_dir, runtime, disk
        self.updates, self.time = runtime.updates, time.monotonic()

    def write_first(self) -> None:
        """A new run checkpoints before it collects anything: a run killed before its first periodic
        checkpoint then resumes from this one with every row its journal holds. A resumed run has one."""
        try:
            self.disk.measure_checkpoint(find_checkpoint(self.run_dir))
        except CheckpointError:
            self.write()

    def maybe_write(self) -> None:
        every_s = self.config.run.checkpoint_every_s
        if self.runtime.updates - self.updates >= self.config.learner.checkpoint_every_updates or (
            every_s and time.monotonic() - self.time >= every_s
        ):
            self.write()

    def write(self) -> Path:
        path = write_checkpoint(self.run_dir, self.runtime)
        self.updates, self.time = self.runtime.updates, time.monotonic()
        self.disk.measure_checkpoint(path)
        return path

    def advice(self) -> str:
        try:
            path = find_checkpoint(self.run_dir)  # this run's last, or the one it resumed from
        except CheckpointError:
            return "The run stopped before its first checkpoint: start it again"
        return (
            f"The last checkpoint is {path} ({checkpoint_info(path)['env_steps']} env steps): continue with "
            f"train.py --resume {self.run_dir}"
        )


def collect(runtime: Runtime, progress: Callable[[StepReport, bool], None]) -> StepReport:
    """Step a collection runtime until its budget is spent, then finish: every worker writes what it
    holds (also after Ctrl-C or SIGTERM, so that a rerun resumes after it). No checkpoints: the
    shards on disk are the collection's state. `progress(report, final)` shows each step."""
    with _StopSignals(runtime.request_stop) as stop:
        try:
            while not runtime.done() and stop.received is None:
                progress(runtime.step(), False)
        finally:
            final = runtime.finish()
            progress(final, True)
    if stop.received is not None:
        raise KeyboardInterrupt(stop.received)
    return final


def write_steps(path: Path, records: list[dict]) -> None:
    """Per-step records as Parquet (a column per field; a field a record lacks is null there)."""
    if not records:
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(dict.fromkeys(name for record in records for name in record))
    table = pa.table({name: [record.get(name) for record in records] for name in names})
    partial = path.with_suffix(".partial")
    pq.write_table(table, partial)
    partial.replace(path)  # a reader never sees half a file


def record(log: RunLog, report: StepReport, runtime: Runtime, config: Config, started: float) -> None:
    # Offline runs take no env steps: their curves are over updates.
    log.scalars(report.metrics, runtime.updates if config.run.mode == "offline" else runtime.env_steps)
    log.episodes(report.episodes)
    log.progress_line(progress_text(report.metrics, config, started), config.run.progress_every_s)


def progress_text(m: dict[str, float], config: Config, started: float) -> str:
    elapsed = max(time.monotonic() - started, 1e-6)
    budget = (
        f"env steps {m['env_steps']:.0f}/{config.run.total_env_steps}"
        if config.run.total_env_steps and config.run.mode != "offline"
        else f"env steps {m['env_steps']:.0f}"
    )
    updates = (
        f"updates {m['learner_updates']:.0f}/{config.run.total_updates}"
        if config.run.total_updates
        else f"updates {m['learner_updates']:.0f}"
    )
    offline = f"+{m['offline_replay_size']:.0f} offline" if m.get("offline_replay_size") else ""
    return (
        f"{budget} ({m.get('env_steps_per_s', 0.0):.0f}/s) | {updates} ({m['updates_per_s']:.1f}/s, "
        f"ratio {m['samples_per_insert']:.1f}) | replay {m['replay_size']:.0f}{offline} | policy "
        f"v{m['policy_version']:.0f} lag {m['policy_lag']:.1f} | feedback avail "
        f"{m.get('feedback/availability', 1.0):.3f} pending {m.get('feedback/pending', 0):.0f} | "
        f"return(ep) {m.get('episode_return', float('nan')):.1f} | {elapsed:.0f} s"
    )
