"""Offline mode (run.mode offline): the learner on data.dataset alone, no environment until the
evaluation. The same Learner, agent, checkpoints and evaluation as the online modes; the run ends
at run.total_updates."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from actors.assembly import build_evaluator
from actors.reporting import RunReport
from actors.run_state import REPLAY_DIR, InProcessLearnerRuntime, RunCounters
from configs.schema import Config
from core import RoleFailed, StepReport
from envs.carla.server import launch_for
from learners.learner import Learner, LearnerDiverged

logger = logging.getLogger(__name__)

_STEP_S = 1.0  # one step() trains for about this long


class OfflineRuntime(InProcessLearnerRuntime):
    def __init__(self, config: Config, run_dir: Path):
        self.config = config
        self.learner = Learner(config, Path(run_dir) / REPLAY_DIR)  # reads data.dataset
        self.counters = RunCounters()
        self._reporting = RunReport()
        self._started = False

    def step(self) -> StepReport:
        """Updates for about a second (never past run.total_updates)."""
        if not self._started:
            self.learner.check_can_start()
            self._reporting.start(self.env_steps)
            self._started = True
        deadline = time.monotonic() + _STEP_S
        try:
            while time.monotonic() < deadline and not self.done():
                if not self.learner.train(max_updates=1):
                    raise RoleFailed(
                        "learner",
                        "the offline replay cannot give a batch: the dataset holds fewer "
                        "transitions than learner.batch_size",
                    )
        except LearnerDiverged as exc:
            raise RoleFailed("learner", str(exc)) from exc
        return self._reporting.build(self.learner.report(), [], [], self.counters)

    def request_stop(self) -> None:
        """A step here is short: the loop sees the signal at its end."""

    def finish(self) -> StepReport:
        return self._reporting.build(self.learner.report(), [], [], self.counters)

    def load(self, directory: Path) -> None:
        self.counters = RunCounters.load(directory)
        self.learner.load(directory)

    def evaluate(self) -> dict[str, dict[str, float]]:
        server = launch_for(self.config.env)
        evaluator = build_evaluator(self.config, server)
        try:
            self.learner.publish()
            evaluator.set_policy(self.learner.sync(-1)[1])
            return evaluator.evaluate()
        finally:
            evaluator.close()
            if server is not None:
                server.stop()

    def shutdown(self) -> None:
        pass
