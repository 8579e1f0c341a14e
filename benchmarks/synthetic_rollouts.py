"""Synthetic stand-ins for the rollout side, for measuring the learner's and the feedback service's
own limits at cluster scale (benchmarks/cluster_scale.py): they move data of the real size along
the real paths at ~zero compute per env step.

- `SyntheticWorkerActor`: a rollout actor without an environment or a policy. It ships chunks of
  `workers.chunk_size` rows (bev uint8 [15, 96, 96] with sparse masks like the real BEV, state
  float32 [10], every ROW_SPEC field) to the real `LearnerActor.add` through `WorkerActor`'s own
  transport (cluster.actors.ChunkShipper), syncs with the learner as often as a real worker, and
  returns reports in `RolloutWorker.report()`'s format, so the real driver loop (runtimes/skeleton.py step) merges them
  (benchmarks/cluster_scale.py's `SyntheticTransport`). This module does not import Ray Serve, so
  32 of these start as fast as the machine allows.
- `SyntheticFeedbackClient`: submits bundles of expert-advisor items (the privileged part is the
  env's expert action, as RolloutWorker._item sends it) through the real `FeedbackClient` and
  `serve_sender` transport, with the worker's adaptive window of pending items.
"""

from __future__ import annotations

import os
import time

import numpy as np
import ray

from cluster.actors import ChunkShipper
from configs.schema import Config
from core import Episode
from core.feedback import FeedbackItem
from envs.spaces import STATE_SIZE
from envs.synthetic_bev import synthetic_bev
from learners.replay import empty_chunk
from workers.feedback_client import FeedbackClient
from workers.rollout_worker import EPISODES_PER_STREAM

EPISODE_ROWS = 500  # rows per synthetic episode (499 transitions and the final observation)
_FRAMES = 8  # distinct BEV frames a worker cycles through


class SyntheticRows:
    """One stream's rows, written into a reused chunk: per step only the counters change."""

    def __init__(self, stream_id: int, chunk_rows: int, seed: int):
        rng = np.random.default_rng(seed)
        self.stream_id = stream_id
        self.chunk = empty_chunk(chunk_rows)
        frames = [synthetic_bev(rng) for _ in range(_FRAMES)]
        for i in range(chunk_rows):
            self.chunk["bev"][i] = frames[i % _FRAMES]
        self.chunk["state"][:] = rng.uniform(-1, 1, (chunk_rows, STATE_SIZE)).astype(np.float32)
        self.chunk["action"][:] = rng.uniform(-1, 1, (chunk_rows, 2)).astype(np.float32)
        self.chunk["reward"][:] = rng.uniform(0, 1, chunk_rows).astype(np.float32)
        self.chunk["stream_id"][:] = stream_id
        self.filled = 0
        self.step = 0  # the stream's never-reset step counter
        self.transitions = 0  # rows that hold a transition (not is_last)
        self.episodes: list[int] = []  # episode indices finished since the last take

    def add_row(self, policy_version: int) -> bool:
        """Write the next row; True when the chunk is full (ship it, then `reset_chunk`)."""
        i, position = self.filled, self.step % EPISODE_ROWS
        is_last = position == EPISODE_ROWS - 1
        c = self.chunk
        c["step"][i] = self.step
        c["is_first"][i] = position == 0
        c["is_last"][i] = is_last
        c["truncated"][i] = position >= EPISODE_ROWS - 2  # the ending transition and the final row
        c["episode_id"][i] = self.stream_id * EPISODES_PER_STREAM + self.step // EPISODE_ROWS
        c["policy_version"][i] = policy_version
        if is_last:
            self.episodes.append(self.step // EPISODE_ROWS)
        else:
            self.transitions += 1
        self.step += 1
        self.filled += 1
        return self.filled == len(c["step"])

    def shipped_chunk(self) -> dict:
        """The filled part of the chunk (a view: Ray copies it when the call is made)."""
        return {key: value[: self.filled] for key, value in self.chunk.items()}


@ray.remote
class SyntheticWorkerActor:
    """`WorkerActor`'s transport and reports, with rows that cost nothing to make. One actor serves
    run after run: `start` binds it to a learner on a new stream."""

    def ready(self) -> int:
        return os.getpid()

    def start(self, config: Config, stream_id: int, learner) -> None:
        from cluster.metrics import WorkerMetrics

        self.config = config
        self._learner = learner
        self._rows = SyntheticRows(stream_id, config.workers.chunk_size, seed=config.run.seed + stream_id)
        self._shipper = ChunkShipper(learner)
        self._metrics = WorkerMetrics(stream_id)
        self.stream_id = stream_id
        self.policy_version = -1
        self.clock_at_sync = self.steps_since_sync = self.env_steps = self.shipped_rows = 0
        self._started = time.process_time()
        self._sync()

    def _sync(self) -> None:
        clock, snapshot = ray.get(self._learner.sync.remote(self.policy_version))
        self.clock_at_sync, self.steps_since_sync = max(clock, self.clock_at_sync + self.steps_since_sync), 0
        if snapshot is not None:
            self.policy_version = snapshot.version

    def _ship_rows(self) -> None:
        rows = self._rows
        if rows.filled:
            self._shipper.ship(rows.shipped_chunk())
            self.shipped_rows += rows.filled
            rows.filled = 0

    def run(self, ticks: int) -> dict:
        for _ in range(ticks):
            if self.steps_since_sync >= self.config.workers.pull_weights_every_steps:
                self._sync()
            if self._rows.add_row(self.policy_version):
                self._ship_rows()
            if self._rows.step % EPISODE_ROWS == EPISODE_ROWS - 1:  # the episode ended: its final row
                if self._rows.add_row(self.policy_version):
                    self._ship_rows()
            self.steps_since_sync += 1
            self.env_steps += 1
        return self.report()

    def drain(self) -> dict:
        self._ship_rows()
        self._shipper.drain()
        return self.report()

    def report(self) -> dict:
        episodes = [
            Episode(self.stream_id, self.clock_at_sync + self.steps_since_sync, 0.0, 0.0, 0.0)
            for _ in self._rows.episodes
        ]
        self._rows.episodes = []
        report = {
            "stream_id": self.stream_id,
            "env_steps": self.env_steps,
            "random_actions": 0,
            "shipped_rows": self.shipped_rows,
            "backpressure_waits": self._shipper.waits,
            "backpressure_wait_s": self._shipper.wait_s,
            "simulator_failures": 0,
            "policy_version": self.policy_version,
            "clock": self.clock_at_sync + self.steps_since_sync,
            "feedback": {
                "pending": 0,
                "answered": 0,
                "malformed": 0,
                "late": 0,
                "expired": 0,
                "failed_calls": 0,
                "availability": 1.0,
                "latency_s": 0.0,
                "latency_sum_s": 0.0,
                "latencies": [],
            },
            "episodes": episodes,
            # beyond RolloutWorker.report(): what the benchmark checks and costs
            "shipped_transitions": self._rows.transitions - self._unshipped_transitions(),
            "cpu_s": time.process_time() - self._started,
        }
        self._metrics.record(report)
        return report

    def _unshipped_transitions(self) -> int:
        return int(np.count_nonzero(~self._rows.chunk["is_last"][: self._rows.filled]))


# ------------------------------------------------------------------------------------------ feedback


@ray.remote
class SyntheticFeedbackClient:
    """Submits expert-advisor items as a rollout worker does (bundles of feedback.bundle_steps items
    through FeedbackClient + serve_sender), as fast as its window of pending items allows."""

    def __init__(self, config: Config, stream_id: int, handle):
        self.config = config
        self.stream_id = stream_id
        from cluster.feedback_service import serve_sender  # Ray Serve: only where a handle is used

        self._client = FeedbackClient(serve_sender(handle), "async", timeout_s=config.feedback.deadline_s)
        rng = np.random.default_rng(config.run.seed + stream_id)
        self._actions = rng.uniform(-1, 1, (64, 2)).astype(np.float32)  # the env's expert actions
        self._step = 0
        self._sent_at: dict[tuple[int, int], float] = {}
        self._window = 2.0 * config.feedback.bundle_steps
        self.sent = self.answered = 0

    def ready(self) -> int:
        return self.stream_id

    def _bundle(self) -> list[FeedbackItem]:
        items, now = [], time.time()
        for _ in range(self.config.feedback.bundle_steps):
            expert = self._actions[self._step % len(self._actions)]
            items.append(
                FeedbackItem(
                    env_id=self.stream_id,
                    step=self._step,
                    wanted=("vlm_action",),
                    command=4,
                    speed=5.0,
                    action=np.zeros(2, np.float32),
                    forward=(1.0, 0.0),
                    privileged=expert,
                    expires_at=now + self.config.feedback.deadline_s,
                )
            )
            self._step += 1
        return items

    def _collect(self, counting: bool) -> int:
        """Take the answers; returns how many came in (counted into the window's total if `counting`)."""
        now, latencies, got = time.time(), [], 0
        for result in self._client.poll():
            sent_at = self._sent_at.pop(result.key, None)
            if sent_at is not None and "vlm_action" in result.values:
                latencies.append(now - sent_at)
                got += 1
        self.answered += got
        if latencies:  # RolloutWorker._adapt_window's controller
            target = self.config.feedback.max_pending_age_s / 2
            factor = min(max(target / max(float(np.mean(latencies)), 1e-3), 0.5), 1.25)
            self._window = min(
                max(self._window * factor, float(self.config.feedback.bundle_steps)), self.config.feedback.max_pending
            )
        return got if counting else 0

    def run(self, start_at: float, warmup_s: float, seconds: float) -> dict:
        """Submit from `start_at` (wall clock, the same for every client) for warmup_s + seconds and
        count the answers of the last `seconds`; then wait for every answer (or the deadline)."""
        self.sent = self.answered = 0
        failed_before = self._client.failed_calls
        time.sleep(max(0.0, start_at - time.time()))
        count_from, stop_at = start_at + warmup_s, start_at + warmup_s + seconds
        counted, cpu_from = 0, None
        while time.time() < stop_at:
            if cpu_from is None and time.time() >= count_from:
                cpu_from = time.process_time()
            if len(self._sent_at) + self.config.feedback.bundle_steps <= self._window:
                self._submit()
            else:
                time.sleep(0.002)
            counted += self._collect(counting=cpu_from is not None)
        cpu_window = time.process_time() - cpu_from if cpu_from is not None else 0.0
        deadline = time.time() + self.config.feedback.deadline_s + 1.0
        while self._sent_at and time.time() < deadline and self._client.failed_calls == failed_before:
            time.sleep(0.005)
            self._collect(counting=False)
        return {
            "sent": self.sent,
            "answered": self.answered,
            "answered_in_window": counted,
            "failed_calls": self._client.failed_calls - failed_before,
            "unanswered": len(self._sent_at),
            "client_cpu_s_in_window": cpu_window,
            "window_items": self._window,
        }

    def _submit(self) -> None:
        bundle = self._bundle()
        sent_at = time.time()
        self._sent_at.update((item.key, sent_at) for item in bundle)
        self._client.submit(bundle)
        self.sent += len(bundle)

    def close(self) -> None:
        self._client.close()
