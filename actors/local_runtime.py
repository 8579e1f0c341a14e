"""Local mode: the same worker, feedback model and learner in one process, no Ray (the debugging
path, like Sample Factory's serial mode).

Each step the worker collects `pull_weights_every_steps` env steps (syncing weights and the clock
first, as it does on Ray), then the learner runs the updates the ratio allows. libsumo allows one
simulation per process, so local mode runs one rollout worker, and the evaluation environment is
opened only after the training environment has been closed.
"""
from __future__ import annotations

import logging
from pathlib import Path

from actors.assembly import build_evaluator, build_rollout_worker, in_process_feedback
from actors.reporting import RunReport
from actors.rollout_worker import RolloutWorker
from actors.run_state import REPLAY_DIR, InProcessLearnerRuntime, RunCounters
from configs.schema import Config
from core import RoleFailed, StepReport
from envs.carla.server import launch_for  # plain Python: the supervisor, no Ray
from learners.learner import Learner, LearnerDiverged

logger = logging.getLogger(__name__)


class LocalRuntime(InProcessLearnerRuntime):
    def __init__(self, config: Config, run_dir: Path):
        self.config = config
        self.learner = Learner(config, Path(run_dir) / REPLAY_DIR)
        self.counters = RunCounters()
        self.worker: RolloutWorker | None = None  # built at the first step, after any load
        self._batcher = None
        self._server = None
        self._reporting = RunReport()

    def _start(self) -> None:
        self.learner.check_can_start()
        self._server = launch_for(self.config.env)  # a CARLA server when env.backend is carla, else None
        self._batcher = in_process_feedback(self.config)
        self.worker = build_rollout_worker(self.config, self.counters.new_stream(), ship=self.learner.add,
                                           sync=self.learner.sync,
                                           send=self._batcher.send if self._batcher else None, server=self._server)
        self._reporting.start(self.env_steps)

    def step(self) -> StepReport:
        """Collect one pull interval of env steps, then train as the ratio allows."""
        if self.worker is None:
            self._start()
        ticks = self.config.workers.pull_weights_every_steps
        if self.config.run.total_env_steps:  # no further than the budget
            ticks = max(1, min(ticks, self.config.run.total_env_steps - self.worker.clock))
        self.worker.run(ticks)
        try:
            self.learner.train()
        except LearnerDiverged as exc:
            raise RoleFailed("learner", str(exc)) from exc
        return self._report()

    def _report(self) -> StepReport:
        worker = self.worker.report()
        return self._reporting.build(self.learner.report(), [worker], worker["episodes"], self.counters)

    def finish(self) -> StepReport:
        """Stop collecting: the worker ships everything it holds, the environment closes."""
        if self.worker is None:
            return StepReport(self.learner.report())
        self.worker.drain()
        report = self._report()
        self._close_worker()
        return report

    def load(self, directory: Path) -> None:
        if self.worker is not None:
            raise RuntimeError("load() must come before the first step(): the worker is already collecting")
        counters = RunCounters.load(directory)
        self.learner.load(directory)
        # Streams started after the checkpoint shipped rows too (they are in the journal): skip them.
        counters.next_stream_id = max(counters.next_stream_id, self.learner.replay.max_stream_id() + 1)
        self.counters = counters

    def evaluate(self) -> dict[str, dict[str, float]]:
        self.finish()  # one simulation per process: the training env closes first
        evaluator = build_evaluator(self.config, self._server)
        try:
            self.learner.publish()  # evaluate the very latest weights
            evaluator.set_policy(self.learner.sync(-1)[1])
            return evaluator.evaluate()
        finally:
            evaluator.close()

    def _close_worker(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None

    def shutdown(self) -> None:
        self._close_worker()
        if self._server is not None:
            self._server.stop()
