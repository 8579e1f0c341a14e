"""The Learner: owns the replay buffer and the agent, updates at a bounded samples-per-insert
ratio, publishes policy weights every N updates, checkpoints and resumes.

Bookkeeping only: the mathematics lives in learners/losses and learners/agent.py.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import torch

from configs.schema import Config
from learners.agent import Agent
from learners.replay import ReplayBuffer
from learners.reward_shaping import RewardShaper

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> str:
    if name == "auto":
        if not torch.cuda.is_available():
            return "cpu"  # also where Ray granted a logical GPU on a machine without one
        return "cuda"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"learner.device = {name!r} but no CUDA device is visible; use auto or cpu")
    return name


class Learner:
    def __init__(self, config: Config, device: str = "auto"):
        self.config = config
        self.device = resolve_device(device if device != "auto" else config.learner.device)
        self.agent = Agent(config.agent, device=self.device, seed=config.run.seed)
        self.replay = ReplayBuffer(config.learner.replay_capacity, seed=config.run.seed)
        self.shaper = RewardShaper(config.learner.clip_reward_scale, config.learner.semantic_reward_scale)
        self.updates = 0
        self.version = 0
        self._published: tuple[int, dict] = (0, self.agent.policy_state())
        self._lock = threading.Lock()  # `add` may run on another thread than `train`
        self._lag_sum, self._lag_count = 0.0, 0
        self.last_metrics: dict[str, float] = {}
        self._started = time.monotonic()

    # ----- data in ---------------------------------------------------------------------------
    def add(self, chunk: dict) -> int:
        with self._lock:
            added = self.replay.add(chunk)
            self.shaper.observe(chunk)
        transitions = ~chunk["is_last"]
        if transitions.any():
            self._lag_sum += float(np.sum(self.version - chunk["policy_version"][transitions]))
            self._lag_count += int(transitions.sum())
        return added

    @property
    def env_steps(self) -> int:
        return self.replay.transitions_total

    # ----- updates ---------------------------------------------------------------------------
    def updates_allowed(self) -> int:
        """Updates the samples-per-insert bound allows now (0 before learning starts)."""
        cfg = self.config.learner
        fresh = self.env_steps - cfg.learning_starts
        if fresh < 0 or not self.replay.can_sample(cfg.batch_size):
            return 0
        budget = int(cfg.samples_per_insert * (fresh + cfg.batch_size) / cfg.batch_size)
        return max(0, budget - self.updates)

    def train(self, max_updates: int | None = None) -> int:
        """Run the updates the rate limit allows (at most max_updates); returns how many ran."""
        done = 0
        while (max_updates is None or done < max_updates) and self.updates_allowed() > 0:
            self.update()
            done += 1
        return done

    def update(self) -> dict[str, float]:
        cfg = self.config
        with self._lock:
            batch = self.replay.sample(cfg.learner.batch_size, cfg.agent.n_step, cfg.agent.gamma)
            shaping = {}
            if self.shaper.active:
                batch["reward"], shaping = self.shaper(batch)
        metrics = self.agent.update(batch, step=self.env_steps) | shaping
        self.updates += 1
        if self.updates % cfg.learner.publish_every_updates == 0:
            self.publish()
        self.last_metrics = metrics
        return metrics

    def publish(self) -> None:
        self.version += 1
        self._published = (self.version, self.agent.policy_state())

    def policy(self, known_version: int = -1) -> tuple[int, dict] | None:
        """The latest published policy if newer than `known_version` (workers pull)."""
        version, state = self._published
        return (version, state) if version > known_version else None

    # ----- reporting -------------------------------------------------------------------------
    def report(self) -> dict[str, float]:
        stats = self.replay.stats()
        return {
            "env_steps": float(self.env_steps),
            "learner_updates": float(self.updates),
            "policy_version": float(self.version),
            "policy_lag": self._lag_sum / self._lag_count if self._lag_count else 0.0,
            "replay_size": float(len(self.replay)),
            "updates_per_s": self.updates / max(time.monotonic() - self._started, 1e-6),
            **{f"replay_{k}": float(v) for k, v in stats.items() if k not in ("size",)},
            **{f"loss/{k}": float(v) for k, v in self.last_metrics.items()},
        }

    # ----- checkpoints -----------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.agent.state_dict(), directory / "agent.pt.tmp")
        (directory / "agent.pt.tmp").replace(directory / "agent.pt")
        with self._lock:
            self.replay.save(directory / "replay")
        meta = {"updates": self.updates, "version": self.version, "lag_sum": self._lag_sum,
                "lag_count": self._lag_count, "shaper": self.shaper.state_dict()}
        (directory / "learner.json").write_text(json.dumps(meta))
        return directory

    def load(self, directory: str | Path) -> None:
        directory = Path(directory)
        missing = [p for p in ("agent.pt", "replay", "learner.json") if not (directory / p).exists()]
        if missing:
            raise FileNotFoundError(f"checkpoint {directory} is incomplete: missing {', '.join(missing)}")
        self.agent.load_state_dict(torch.load(directory / "agent.pt", map_location=self.device, weights_only=False))
        self.replay = ReplayBuffer.load(directory / "replay")
        meta = json.loads((directory / "learner.json").read_text())
        self.updates, self.version = meta["updates"], meta["version"]
        self._lag_sum, self._lag_count = meta["lag_sum"], meta["lag_count"]
        if "shaper" in meta:  # checkpoints written before reward shaping existed have none
            self.shaper.load_state_dict(meta["shaper"])
        self._published = (self.version, self.agent.policy_state())
