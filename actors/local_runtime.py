"""Local mode: the same worker, feedback model and learner in one process, no Ray (the debugging
path, like Sample Factory's serial mode).

Each step every worker in turn collects `pull_weights_every_steps` env steps (syncing weights and the
clock first, as it does on Ray), then the learner runs the updates the ratio allows. All workers'
environments live in this process (the first simulation in libsumo, the others in SUMO servers over
TraCI: envs/sumo/connection.py).
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
        self.workers: list[RolloutWorker] = []  # built at the first step, after any load
        self._batcher = None
        self._server = None
        self._reporting = RunReport()

    def _start(self) -> None:
        self.learner.check_can_start()
        self._server = launch_for(self.config.env)  # a CARLA server when env.backend is carla, else None
        self._batcher = in_process_feedback(self.config)
        send = self._batcher.send if self._batcher else None
        self.workers = [
            build_rollout_worker(
                self.config,
                self.counters.new_stream(),
                ship=self.learner.add,
                sync=self.learner.sync,
                send=send,
                server=self._server,
            )
            for _ in range(self.config.workers.num_workers)
        ]
        self._reporting.start(self.env_steps)

    def step(self) -> StepReport:
        """Each worker collects one pull interval of env steps, then the learner trains as the ratio allows."""
        if not self.workers:
            self._start()
        for worker in self.workers:
            ticks = self.config.workers.pull_weights_every_steps
            if self.config.run.total_env_steps:  # no further than the budget (the rows shipped so far)
                left = self.config.run.total_env_steps - self.learner.env_steps
                if left <= 0:
                    break
                ticks = min(ticks, left)
            worker.run(ticks)
        try:
            self.learner.train()
        except LearnerDiverged as exc:
            raise RoleFailed("learner", str(exc)) from exc
        return self._report()

    def _report(self) -> StepReport:
        reports = [worker.report() for worker in self.workers]
        episodes = [episode for report in reports for episode in report["episodes"]]
        return self._reporting.build(self.learner.report(), reports, episodes, self.counters)

    def request_stop(self) -> None:
        """A step here is short: the loop sees the signal at its end."""

    def finish(self) -> StepReport:
        """Stop collecting: the workers ship everything they hold, the environments close."""
        if not self.workers:
            return StepReport(self.learner.report())
        for worker in self.workers:
            worker.drain()
        report = self._report()
        self._close_workers()
        return report

    def load(self, directory: Path) -> None:
        if self.workers:
            raise RuntimeError("load() must come before the first step(): the worker is already collecting")
        counters = RunCounters.load(directory)
        self.learner.load(directory)
        # Streams started after the checkpoint shipped rows too (they are in the journal): skip them.
        counters.next_stream_id = max(counters.next_stream_id, self.learner.replay.max_stream_id() + 1)
        self.counters = counters

    def evaluate(self) -> dict[str, dict[str, float]]:
        self.finish()  # collection stops: the evaluation sees the final weights
        evaluator = build_evaluator(self.config, self._server)
        try:
            self.learner.publish()  # evaluate the very latest weights
            evaluator.set_policy(self.learner.sync(-1)[1])
            return evaluator.evaluate()
        finally:
            evaluator.close()

    def _close_workers(self) -> None:
        for worker in self.workers:
            worker.close()
        self.workers = []
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None

    def shutdown(self) -> None:
        self._close_workers()
        if self._server is not None:
            self._server.stop()
