"""A rollout worker: one environment, a Policy, and a feedback client it never waits on.

Each tick it acts, sends the observation's feedback item (bundled over a few ticks to keep the
per-call cost low), steps the env, attaches whatever answers came back, and ships finished rows
to the learner in chunks. When the oldest unanswered item falls too far behind, it waits
(backpressure) instead of dropping anything.

One clock: the worker acts on the run's global env-step count, learned from the learner at every
sync (`pull_weights_every_steps` of its own steps apart) plus its own steps since. The random
warm-up (`workers.random_steps`) and the exploration schedules follow that clock, so a resumed or
replacement worker neither repeats the warm-up nor explores as if the run had just begun.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

import numpy as np

from configs.schema import Config
from core import Episode, Policy, PolicySnapshot
from core.feedback import FeedbackItem
from envs.types import Route, SimulatorError
from learners.replay import empty_chunk
from workers.feedback_client import FeedbackClient
from workers.pending import PendingTransitions
from workers.row_reward import make_row_reward

logger = logging.getLogger(__name__)

_GATE_ROUTE_M = 60.0  # how much of the route ahead DriveVLM-RL's attention gate looks at
_RESET_ATTEMPTS = 3
EPISODES_PER_STREAM = 1_000_000  # episode ids: stream_id * this + the stream's episode index


# (global env steps, the newest snapshot if newer than the version asked about)
Sync = Callable[[int], tuple[int, PolicySnapshot | None]]


@dataclass
class WorkerStats:
    env_steps: int = 0
    random_actions: int = 0  # warm-up actions (uniform), before the global clock passed random_steps
    episodes: int = 0
    shipped_rows: int = 0
    backpressure_waits: int = 0
    backpressure_wait_s: float = 0.0
    simulator_failures: int = 0


class RolloutWorker:
    """Plain class: runs in-process (local mode, tests) or inside a Ray actor (cluster/)."""

    def __init__(
        self,
        config: Config,
        stream_id: int,
        env,
        policy: Policy,
        feedback: FeedbackClient | None,
        ship: Callable[[dict], None],
        sync: Sync,
        model_inputs: frozenset[str] = frozenset(),
        seed: int = 0,
        extra_fields: Mapping[str, tuple[tuple[int, ...], np.dtype]] | None = None,
    ):
        """`extra_fields`: info entries shipped as extra row fields (a collection's rgb_bev, command);
        only a dataset sink takes those, the replay does not."""
        self.config = config
        self.stream_id = stream_id
        self._env = env
        self._policy = policy
        self._feedback = feedback if config.feedback.mode != "off" else None
        self._wanted = tuple(config.feedback.wanted) if self._feedback is not None else ()
        self._ship = ship
        self._pull = sync
        self._inputs = model_inputs
        self._record_expert = config.workers.record_expert_action
        self._extra_fields = dict(extra_fields or {})
        self._pending = PendingTransitions(config.feedback.deadline_s)
        self._stop = threading.Event()  # set by request_stop(), from another thread
        self._reward = make_row_reward(config)  # the env's reward, or DriveVLM-RL's synthesized one
        self._bundle: list[FeedbackItem] = []
        self._outbox: list[dict] = []
        self._rng = np.random.default_rng(seed)
        self.stats = WorkerStats()
        self._new_episodes: list[Episode] = []
        # Backpressure window (items awaiting feedback): adapted so that answers come back within
        # feedback.max_pending_age_s / 2, however fast or slow the model is (a Vegas-like controller);
        # it starts at two bundles and grows while answers come back in time.
        self._window = 2.0 * self._bundle_size()
        self._latency_seen = (0, 0.0)
        self.policy_version = -1
        self._clock_at_sync = 0
        self._steps_since_sync = 0
        self._step = 0  # this stream's never-reset step counter
        self._episode = 0
        self._carry = policy.initial_carry(1)
        self._sync()  # the current weights and clock before the first action
        self._obs, self._info = self._env.reset(seed=seed)
        self._reward.start_episode(self._info)
        self._is_first = True
        self._episode_return = 0.0

    @property
    def clock(self) -> int:
        """The run's env steps as this worker knows them: the learner's count at the last sync plus
        its own steps since."""
        return self._clock_at_sync + self._steps_since_sync

    # ----- the loop --------------------------------------------------------------------------
    def run(self, ticks: int) -> None:
        """Take up to `ticks` env steps; fewer once a stop is requested (request_stop)."""
        for _ in range(ticks):
            if self._stop.is_set():
                return
            if self._steps_since_sync >= self.config.workers.pull_weights_every_steps:
                self._sync()
            self.tick()

    def tick(self) -> None:
        self._wait_for_backpressure()
        action = self._act()
        self._record_and_request(action)
        try:
            obs, reward, terminated, truncated, info = self._env.step(action)
        except SimulatorError as exc:
            self._simulator_failed(exc)
            self._exchange()
            return
        self._episode_return += reward
        self._pending.complete_env(
            self.stream_id,
            self._step,
            reward=np.float32(reward),
            terminated=terminated,
            truncated=truncated,
            cost=np.float32(1.0 if info["infractions"] else 0.0),
            **self._reward.after_step(info, terminated),
        )
        self._advance()
        if terminated or truncated:
            self._end_episode(obs, info, terminated, truncated)
        else:
            self._obs, self._info, self._is_first = obs, info, False
        self._exchange()

    def drain(self, timeout_s: float | None = None) -> None:
        """Ship everything this worker holds: bundled items go out, pending rows wait for their
        answers for at most `timeout_s` (default: their deadline), and then every row is shipped,
        the fields still unanswered unavailable (mask 0, as for a late answer)."""
        self._send_bundle()
        limit = time.monotonic() + (timeout_s if timeout_s is not None else self.config.feedback.deadline_s + 1.0)
        while len(self._pending) and time.monotonic() < limit:
            time.sleep(0.005)
            self._collect()
        self._collect(expire_all=True)
        if self._outbox:
            self._ship_outbox()

    def request_stop(self) -> None:
        """Ask run() to return at its next tick, and a backpressure wait to end (thread-safe: a
        stopping driver calls it while run() is in progress). The worker then only drains."""
        self._stop.set()

    def close(self) -> None:
        if self._feedback is not None:
            self._feedback.close()
        self._env.close()

    # ----- pieces ----------------------------------------------------------------------------
    def _sync(self) -> None:
        clock, snapshot = self._pull(self.policy_version)
        self._clock_at_sync, self._steps_since_sync = max(clock, self.clock), 0
        if snapshot is not None:
            self._policy.load_weights(snapshot.weights)
            self.policy_version = snapshot.version

    def _advance(self) -> None:
        self._step += 1
        self._steps_since_sync += 1
        self.stats.env_steps += 1

    def _act(self) -> np.ndarray:
        if self.clock < self.config.workers.random_steps:
            self.stats.random_actions += 1
            return self._rng.uniform(-1.0, 1.0, size=2).astype(np.float32)
        obs = {"bev": self._obs["bev"][None], "state": self._obs["state"][None]}
        self._carry, action = self._policy.act(
            self._carry, obs, np.array([self._is_first]), explore=True, step=self.clock
        )
        return np.asarray(action[0], dtype=np.float32)

    def _row(self, obs: dict, info: dict, is_last: bool) -> dict:
        """The fields known now; the rest are filled as they come, or stay zero (with mask 0)."""
        row = dict(
            bev=obs["bev"],
            state=obs["state"],
            is_first=self._is_first and not is_last,
            is_last=is_last,
            policy_version=self.policy_version,
            episode_id=self.stream_id * EPISODES_PER_STREAM + self._episode,
            stream_id=self.stream_id,
            step=self._step,
        )
        for name in self._extra_fields:  # a dataset's extra columns, straight from the env's info
            row[name] = info[name]
        return row

    def _record_and_request(self, action: np.ndarray) -> None:
        row = self._row(self._obs, self._info, is_last=False)
        row["action"] = action
        if self._record_expert:
            row["expert_action"], row["expert_action_mask"] = self._env.unwrapped.expert_action(), 1.0
        self._pending.add(self.stream_id, self._step, row, self._wanted)
        if self._wanted:
            self._bundle.append(self._item(action))

    def _item(self, action: np.ndarray) -> FeedbackItem:
        # The expert advisor's input is the privileged expert's action, which the env computes once
        # per step (the expert_action label above reads the same): 8 bytes on the wire instead of
        # the snapshot and route, and no second expert computation in the feedback service.
        privileged = self._env.unwrapped.expert_action() if "privileged" in self._inputs else None
        return FeedbackItem(
            env_id=self.stream_id,
            step=self._step,
            wanted=self._wanted,
            command=int(self._info["command"]),
            speed=float(self._info["speed"]),
            action=action,
            image=self._info["rgb_bev"] if "image" in self._inputs else None,
            forward=self._info.get("forward"),
            privileged=privileged,
            expires_at=time.time() + self.config.feedback.deadline_s,
            **self._reward.item_fields(self._info, self._ground_truth),
        )

    def _ground_truth(self) -> tuple:
        """(snapshot, the route ahead of the ego) at the current observation."""
        snapshot, route, index = self._env.unwrapped.ground_truth()
        return snapshot, _route_ahead(route, index)

    def _end_episode(self, final_obs: dict, info: dict | None, terminated: bool, truncated: bool) -> None:
        """`info` None: the episode was cut short by a simulator failure and is not scored."""
        # The final observation is a row of its own: the next observation of the last transition.
        # Its terminated/truncated say how the episode ended (a sequence's is_terminal).
        self._pending.add(self.stream_id, self._step, self._row(final_obs, info or self._info, is_last=True), ())
        self._pending.complete_env(self.stream_id, self._step, terminated=terminated, truncated=truncated)
        self._step += 1
        if info is not None:
            metrics = info.get("episode_metrics", {})
            self.stats.episodes += 1
            self._new_episodes.append(
                Episode(
                    self.stream_id,
                    self.clock,
                    float(self._episode_return),
                    float(metrics.get("route_completion", 0.0)),
                    float(metrics.get("driving_score", 0.0)),
                )
            )
        self._episode += 1
        self._episode_return = 0.0
        self._obs, self._info = self._reset_env()
        self._reward.start_episode(self._info)
        self._is_first = True
        self._carry = self._policy.initial_carry(1)

    def _reset_env(self):
        """reset(), tried again when the simulator fails during it (a SUMO crash, a blocked CARLA
        spawn point); the third failure is the worker's (its actor is then replaced)."""
        for attempt in range(_RESET_ATTEMPTS):
            try:
                return self._env.reset()
            except SimulatorError as exc:
                if attempt == _RESET_ATTEMPTS - 1:
                    raise
                logger.warning("worker %d: reset failed (%s); trying again", self.stream_id, exc)
                self.stats.simulator_failures += 1

    def _simulator_failed(self, exc: SimulatorError) -> None:
        """The simulator failed mid-step (a SUMO crash) and can go on after a reset: end the
        episode as truncated at the last observation and reset.
        The bridging transition (same observation, reward 0, truncated) keeps every stored row
        complete; a truncation bootstraps, so it teaches nothing false."""
        logger.warning("worker %d: simulator failed at step %d, episode truncated: %s", self.stream_id, self._step, exc)
        self.stats.simulator_failures += 1
        self._pending.complete_env(
            self.stream_id, self._step, reward=np.float32(0.0), terminated=False, truncated=True, cost=np.float32(0.0)
        )
        self._advance()
        self._end_episode(self._obs, None, terminated=False, truncated=True)

    def _exchange(self) -> None:
        if len(self._bundle) >= self._bundle_size():
            self._send_bundle()
        self._collect()
        if len(self._outbox) >= self.config.workers.chunk_size:
            self._ship_outbox()

    def _bundle_size(self) -> int:
        return 1 if self.config.feedback.mode == "sync" else self.config.feedback.bundle_steps

    def _send_bundle(self) -> None:
        if self._bundle and self._feedback is not None:
            self._feedback.submit(self._bundle)
        self._bundle = []

    def _collect(self, expire_all: bool = False) -> None:
        if self._feedback is not None:
            for result in self._feedback.poll():
                self._reward.on_result(result)
                self._pending.attach(result)
            self._adapt_window()
        self._outbox.extend(self._reward.finish(row) for row in self._pending.pop_ready(expire_all))

    def _adapt_window(self) -> None:
        """Scale the window by target latency / recent latency (at most x2 down, x1.25 up per answer
        batch), between one bundle and feedback.max_pending."""
        c, (count, total) = self._pending.counters, self._latency_seen
        if c.latency_count == count:
            return
        recent = (c.latency_sum_s - total) / (c.latency_count - count)
        self._latency_seen = (c.latency_count, c.latency_sum_s)
        target = self.config.feedback.max_pending_age_s / 2
        factor = min(max(target / max(recent, 1e-3), 0.5), 1.25)
        self._window = min(max(self._window * factor, float(self._bundle_size())), self.config.feedback.max_pending)

    def _ship_outbox(self) -> None:
        chunk = empty_chunk(len(self._outbox), self._extra_fields)
        for i, row in enumerate(self._outbox):
            for name, value in row.items():
                chunk[name][i] = value
        self._ship(chunk)
        self.stats.shipped_rows += len(self._outbox)
        self._outbox = []

    def _must_wait(self) -> bool:
        return len(self._pending) > self._window or self._pending.oldest_age() > self.config.feedback.max_pending_age_s

    def _wait_for_backpressure(self) -> None:
        if not self._must_wait():
            return
        started = time.monotonic()
        self.stats.backpressure_waits += 1
        self._send_bundle()
        while self._must_wait() and not self._stop.is_set():
            time.sleep(0.002)
            self._collect()  # expired rows leave at their deadline, so this ends
        self.stats.backpressure_wait_s += time.monotonic() - started

    # ----- reporting -------------------------------------------------------------------------
    def report(self) -> dict:
        """Counters since the start (cumulative) and the episodes finished since the last report."""
        episodes, self._new_episodes = self._new_episodes, []
        s = self.stats
        return {
            "stream_id": self.stream_id,
            "env_steps": s.env_steps,
            "random_actions": s.random_actions,
            "shipped_rows": s.shipped_rows,
            "backpressure_waits": s.backpressure_waits,
            "backpressure_wait_s": s.backpressure_wait_s,
            "simulator_failures": s.simulator_failures,
            "policy_version": self.policy_version,
            "clock": self.clock,
            "feedback": self.feedback_report(),
            "episodes": episodes,
        }

    def feedback_report(self) -> dict:
        """Running totals since the worker started, and each answer's latency since the last report
        (`latencies`: the dashboard's histogram records observations, not means)."""
        c = self._pending.counters
        wanted_total = c.answered + c.malformed + c.expired
        return {
            "pending": len(self._pending),
            "answered": c.answered,
            "malformed": c.malformed,
            "late": c.late,
            "expired": c.expired,
            "failed_calls": self._feedback.failed_calls if self._feedback is not None else 0,
            "availability": c.answered / wanted_total if wanted_total else 1.0,
            "latency_s": c.latency_sum_s / c.latency_count if c.latency_count else 0.0,
            "latency_sum_s": c.latency_sum_s,
            "latencies": self._pending.take_latencies(),
            **self._reward.report(),  # DriveVLM-RL: gate_rate, unscored_steps, vlm_latency_s, ...
        }


def _route_ahead(route: Route, index: int) -> Route:
    end = int(np.searchsorted(route.s, route.s[index] + _GATE_ROUTE_M)) + 1
    return Route(xy=route.xy[index:end], yaw=route.yaw[index:end], commands=route.commands[index:end])
