"""Online mode: rollout workers drive with the latest policy and ship their rows to the learner,
which trains on them as the train ratio allows (learner.samples_per_insert)."""

from __future__ import annotations

from configs.schema import Config, RunConfig
from learners.learner import Learner
from workers.assembly import build_rollout_worker
from workers.rollout_worker import RolloutWorker


class OnlineMode:
    name = "online"
    has_learner = True
    evaluates = True

    def num_workers(self, config: Config) -> int:
        return config.workers.num_workers

    def build_worker(self, config: Config, stream_id: int, ship, sync, send, server) -> RolloutWorker:
        return build_rollout_worker(config, stream_id, ship=ship, sync=sync, send=send, server=server)

    def train(self, learner: Learner, run: RunConfig) -> None:
        learner.train()  # the updates the ratio allows for the rows shipped so far


MODE = OnlineMode()
