"""What the runtime skeleton (runtimes/skeleton.py) is made of, as narrow interfaces.

A run is the skeleton plus one **mode** and one **transport**:

- the mode says where experience comes from and where it goes: online (rollout workers -> the
  learner), offline (a dataset -> the learner, no workers), collection (rollout workers -> dataset
  shards, no learner). A mode is one file (runtimes/online.py, offline.py, collection.py) and one
  line in runtimes/registry.py.
- the transport says how the skeleton reaches the roles: in this process (runtimes/local.py) or as
  Ray actors (cluster/transport.py). It carries calls; it decides nothing about budgets, failures,
  checkpoints or evaluation, which the skeleton owns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from configs.schema import Config, RunConfig
from core import PolicySnapshot


class WorkerFailed(Exception):
    """A worker's call failed or its process died; `dead`: the worker cannot be called again."""

    def __init__(self, cause: str, dead: bool):
        super().__init__(cause)
        self.cause, self.dead = cause, dead


class Worker(Protocol):
    """What a mode's worker does, wherever it runs (RolloutWorker's own methods)."""

    def run(self, ticks: int) -> None:
        """Take `ticks` env steps (fewer when a stop is requested meanwhile)."""

    def request_stop(self) -> None:
        """End the run() call in progress at its next tick."""

    def drain(self, timeout_s: float | None = None) -> None:
        """Hand on everything held (pending feedback waits at most `timeout_s`)."""

    def report(self) -> dict:
        """Cumulative counters ("env_steps", ...) and the episodes finished since the last report."""

    def close(self) -> None: ...


# ship(chunk) -> the learner's insert credit or None; sync(known version) -> (version, snapshot or None)
Ship = Callable[[dict], Any]
Sync = Callable[[int], tuple]


class Mode(Protocol):
    """Where a run's experience comes from and where it goes."""

    name: str
    has_learner: bool  # the transport hosts a Learner (online, offline); collection has none
    evaluates: bool  # the run ends with the evaluation suite

    def num_workers(self, config: Config) -> int:
        """How many worker slots the run keeps busy (0: the learner learns from a dataset alone)."""

    def build_worker(self, config: Config, stream_id: int, ship: Ship, sync: Sync, send, server) -> Worker:
        """One worker on its own stream, in whichever process the transport put it in; `send` is the
        feedback transport (None when feedback is off), `server` its CARLA server (or None)."""

    def train(self, learner, run: RunConfig) -> None:
        """One step's learning by a learner in this process (a Ray learner trains on its own thread)."""


class LearnerPort(Protocol):
    """The learner as the skeleton reaches it. Every call raises core.RoleFailed when the learner died
    or failed."""

    def report(self) -> dict: ...

    def start(self) -> None:
        """Refuse a run directory whose journal has not loaded; a Ray learner starts training."""

    def train(self, run: RunConfig) -> None:
        """One step's updates in this process (nothing for a learner that trains on its own thread)."""

    def stop(self) -> None: ...

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> None: ...

    def max_stream_id(self) -> int: ...

    def snapshot(self) -> PolicySnapshot:
        """Publish the very latest weights and return them."""


class Transport(Protocol):
    """How the skeleton reaches its roles. A call is an opaque token; `wait` says which are done."""

    learner: LearnerPort | None

    def start_worker(self, stream_id: int) -> Any: ...

    def run(self, worker, ticks: int) -> Any:
        """Start worker.run(ticks) followed by its report; the call's token."""

    def wait(self, calls: list, timeout_s: float, stopping: Callable[[], bool]) -> list:
        """The calls among `calls` that have finished: at least one, or none after `timeout_s`, or
        sooner once `stopping()` is true."""

    def result(self, call) -> dict:
        """The report of a finished call; WorkerFailed when the call failed."""

    def stop_workers(self, workers: list, calls: list, grace_s: float | None) -> list[tuple[list[dict], bool]]:
        """Every worker at once ends its call (`calls`, one per worker, None when idle) and drains
        (pending feedback waits at most `grace_s`; None: until its deadline), all waited for
        together. Per worker: the reports of its call and its drain that it gave (a failed one is
        logged and left out), and whether it is still alive."""

    def close_workers(self, workers: list) -> None: ...

    def kill_worker(self, worker) -> None: ...

    def evaluate(self, snapshot: PolicySnapshot) -> tuple[dict[str, dict[str, float]], list[dict]]:
        """The evaluation suite driven with `snapshot`: its metric table and its per-step records."""

    def record(self, metrics: dict[str, float]) -> None:
        """Show the run's metrics where this transport's users look (the Ray dashboard)."""

    def describe_resources(self) -> str:
        """What is free for workers to start on (a stalled run's warning says it)."""

    def shutdown(self) -> None: ...
