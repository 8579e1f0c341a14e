"""Offline mode (run.mode offline): the learner on data.dataset alone, no environment until the
evaluation. The same Learner, agent, checkpoints and evaluation as online; the run ends at
run.total_updates."""

from __future__ import annotations

import time

from configs.schema import Config, RunConfig
from core import RoleFailed
from learners.learner import Learner

STEP_S = 1.0  # one step trains for about this long


class OfflineMode:
    name = "offline"
    has_learner = True
    evaluates = True

    def num_workers(self, config: Config) -> int:
        return 0  # the experience is the dataset's

    def build_worker(self, config: Config, stream_id: int, ship, sync, send, server):
        raise RuntimeError("an offline run has no workers")

    def train(self, learner: Learner, run: RunConfig) -> None:
        """Updates for about a second (never past run.total_updates)."""
        deadline = time.monotonic() + STEP_S
        while time.monotonic() < deadline and not (run.total_updates and learner.updates >= run.total_updates):
            if not learner.train(max_updates=1):
                raise RoleFailed(
                    "learner",
                    "the offline replay cannot give a batch: the dataset holds fewer "
                    "transitions than learner.batch_size",
                )


MODE = OfflineMode()
