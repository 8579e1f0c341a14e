"""The rollout worker on the real embedded simulator, in one process (local mode pieces)."""

import dataclasses

import numpy as np
import pytest

from configs.loader import load_config
from core import PolicySnapshot
from core.feedback import FeedbackItem
from envs.expert import expert_action
from envs.types import SimulatorError
from feedback.expert_advisor import ExpertAdvisor
from feedback.stand_ins import FaultyModel, SlowModel
from learners.replay import ReplayBuffer
from workers.assembly import make_env
from workers.feedback_client import FeedbackClient, InProcessBatcher
from workers.rollout_worker import RolloutWorker, _route_ahead

pytestmark = pytest.mark.sim


class ConstantPolicy:
    """Throttle 0.4, straight; records the clock it was asked to act at."""

    def __init__(self):
        self.steps, self.weights = [], None

    def initial_carry(self, batch_size):
        return None

    def act(self, carry, obs, is_first, *, explore, step):
        self.steps.append(step)
        return carry, np.tile(np.array([0.4, 0.0], np.float32), (len(obs["bev"]), 1))

    def load_weights(self, weights):
        self.weights = weights


class Clock:
    """A learner stand-in for `sync`: a global clock and a published snapshot."""

    def __init__(self, env_steps=0, version=0):
        self.env_steps, self.version, self.calls = env_steps, version, 0

    def __call__(self, known_version):
        self.calls += 1
        snapshot = PolicySnapshot(self.version, {"v": self.version}) if self.version > known_version else None
        return self.env_steps, snapshot


def config(*extra, **feedback):
    base = load_config(
        None,
        [
            "env.town=Generated",
            "env.traffic=regular",
            "workers.num_workers=1",
            "workers.random_steps=0",
            "workers.chunk_size=16",
            *extra,
        ],
    )
    return dataclasses.replace(base, feedback=dataclasses.replace(base.feedback, **feedback))


def client(model, mode="async", deadline_s=5.0, **batching):
    return FeedbackClient(InProcessBatcher(model, **batching).send, mode, timeout_s=deadline_s)


def worker(cfg, feedback, replay, policy=None, sync=None, env=None, stream_id=3):
    return RolloutWorker(
        cfg,
        stream_id,
        env or make_env(cfg.env),
        policy or ConstantPolicy(),
        feedback,
        ship=replay.add,
        sync=sync or Clock(),
        model_inputs=ExpertAdvisor.inputs,
        seed=1,
    )


def collect(w, ticks: int) -> None:
    try:
        w.run(ticks)
        w.drain()
    finally:
        w.close()


@pytest.fixture
def replay():
    return ReplayBuffer(4096)


def test_async_feedback_reaches_the_replay_with_masks(replay):
    cfg = config(bundle_steps=4)
    w = worker(cfg, client(ExpertAdvisor()), replay)
    collect(w, 200)
    stored = replay.arrays
    n = len(replay)
    transitions = ~stored["is_last"][:n]
    assert n >= 150 and stored["stream_id"][:n].tolist() == [3] * n
    assert np.all(np.diff(stored["step"][:n]) == 1)  # one stream, in step order
    assert stored["vlm_action_mask"][:n][transitions].mean() > 0.95
    assert w.feedback_report()["availability"] > 0.95
    answered = stored["vlm_action_mask"][:n] == 1.0
    np.testing.assert_array_equal(stored["vlm_action"][:n][answered], stored["expert_action"][:n][answered])


def test_the_advisor_answers_what_the_expert_computes_from_the_snapshot_and_route_ahead():
    """Items carry the env's expert action (computed once per step) instead of the snapshot and
    route: the advisor's answers are the same as when it computed them from those."""
    env, advisor = make_env(config().env), ExpertAdvisor()
    env.reset(seed=2)
    try:
        for step in range(300):
            snapshot, route, index = env.unwrapped.ground_truth()
            from_ground_truth = expert_action(snapshot, _route_ahead(route, index), 0)
            item = FeedbackItem(
                0, step, ("vlm_action",), 4, 0.0, np.zeros(2, np.float32), privileged=env.unwrapped.expert_action()
            )
            np.testing.assert_array_equal(advisor([item])[0].values["vlm_action"], from_ground_truth)
            _, _, terminated, truncated, _ = env.step(env.unwrapped.expert_action())
            if terminated or truncated:
                env.reset()
    finally:
        env.close()


def test_backpressure_keeps_pending_bounded_with_a_slow_model(replay):
    cfg = config(bundle_steps=1, max_pending=8, max_pending_age_s=10.0, deadline_s=10.0)
    w = worker(cfg, client(SlowModel(ExpertAdvisor(), delay_s=0.02), deadline_s=10.0, max_batch_size=2), replay)
    peak = 0
    try:
        for _ in range(60):
            w.tick()
            peak = max(peak, w.feedback_report()["pending"])
        w.drain()
    finally:
        w.close()
    assert peak <= 8 + 1  # the bound, plus the final observation of an episode that may end
    assert w.stats.backpressure_waits > 0
    assert w.feedback_report()["availability"] == 1.0  # it waited: nothing was dropped


def test_a_slow_model_slows_the_worker_instead_of_starving_the_learner(replay):
    """One second per batch (a heavy VLM): items still come back in time (availability >= 0.95),
    and the worker's steps per second fall instead."""
    cfg = config(bundle_steps=32, deadline_s=5.0, max_pending_age_s=2.5)
    w = worker(cfg, client(SlowModel(ExpertAdvisor(), delay_s=1.0), deadline_s=5.0, max_batch_size=64), replay)
    collect(w, 300)
    report = w.feedback_report()
    assert report["availability"] >= 0.95, report
    assert w.stats.backpressure_waits > 0


def test_faulty_model_gives_mask_zero_never_defaults(replay):
    cfg = config(bundle_steps=2, deadline_s=0.5)
    w = worker(cfg, client(FaultyModel(ExpertAdvisor(), error_rate=0.5, seed=0), deadline_s=0.5), replay)
    collect(w, 200)
    n = len(replay)
    stored = replay.arrays
    rows = ~stored["is_last"][:n]
    masks = stored["vlm_action_mask"][:n][rows]
    actions = stored["vlm_action"][:n][rows]
    assert 0.2 < masks.mean() < 0.9
    assert np.all(actions[masks == 0] == 0.0)  # unavailable rows carry no made-up value
    assert np.all(np.isfinite(actions)) and np.all(np.abs(actions) <= 1.0)
    report = w.feedback_report()
    assert report["malformed"] + report["expired"] > 0
    assert report["failed_calls"] > 0  # whole batches that raised are counted, not only expired items


def test_sync_mode_answers_everything(replay):
    cfg = config(mode="sync")
    w = worker(cfg, client(ExpertAdvisor(), mode="sync"), replay)
    collect(w, 50)
    n = len(replay)
    rows = ~replay.arrays["is_last"][:n]
    assert replay.arrays["vlm_action_mask"][:n][rows].min() == 1.0


class FailingSteps:
    """The real env, except that chosen step() and reset() calls fail as a dead CARLA server does."""

    def __init__(self, env, fail_steps=(), fail_resets=0):
        self.env, self.unwrapped = env, env.unwrapped
        self._fail_steps, self._fail_resets = set(fail_steps), fail_resets
        self.steps = 0

    def reset(self, **kwargs):
        if self._fail_resets and self.steps:
            self._fail_resets -= 1
            raise SimulatorError("server restarting")
        return self.env.reset(**kwargs)

    def step(self, action):
        self.steps += 1
        if self.steps in self._fail_steps:
            raise SimulatorError("tick timed out")
        return self.env.step(action)

    def close(self):
        self.env.close()


def test_a_simulator_failure_truncates_the_episode_and_collection_goes_on(replay):
    cfg = config(mode="off")
    w = worker(cfg, None, replay, env=FailingSteps(make_env(cfg.env), fail_steps={30}, fail_resets=1), stream_id=1)
    collect(w, 60)
    n = len(replay)
    stored = replay.arrays
    assert w.stats.simulator_failures == 2  # the step, then the first reset after it
    assert w.stats.episodes == 0  # the cut-short episode is not scored
    assert n == 61  # 60 transitions (the failed one bridged) and the final row of the cut episode
    ends = np.flatnonzero(stored["is_last"][:n])
    assert len(ends) == 1 and stored["truncated"][ends[0] - 1] and not stored["terminated"][ends[0] - 1]
    np.testing.assert_array_equal(replay.bev(ends[0]), replay.bev(ends[0] - 1))  # bridged at the last obs
    assert stored["truncated"][ends[0]]  # the is_last row repeats how the episode ended


def test_one_clock_warm_up_and_exploration_follow_the_global_step(replay):
    cfg = config("workers.random_steps=1000", "workers.pull_weights_every_steps=50", mode="off")
    # A fresh run: the global clock is at 0, so the worker takes the random warm-up.
    fresh_policy, fresh_clock = ConstantPolicy(), Clock(env_steps=0)
    fresh = worker(cfg, None, replay, policy=fresh_policy, sync=fresh_clock)
    collect(fresh, 100)
    assert fresh.stats.random_actions == 100 and not fresh_policy.steps
    # A resumed or replacement worker joins a run at 5000 global steps: no warm-up again, and it
    # acts on the global clock (plus its own steps since the last sync), not on its own count.
    policy, clock = ConstantPolicy(), Clock(env_steps=5000, version=7)
    joined = worker(cfg, None, ReplayBuffer(4096), policy=policy, sync=clock, stream_id=4)
    assert joined.policy_version == 7 and policy.weights == {"v": 7}  # current weights before acting
    joined.run(50)
    clock.env_steps = 9000  # the other workers moved the run on
    collect(joined, 70)
    assert joined.stats.random_actions == 0
    assert policy.steps[:50] == list(range(5000, 5050))  # the global count plus its own steps since
    assert policy.steps[50:] == list(range(9000, 9050)) + list(range(9050, 9070))  # re-synced at step 50
    assert clock.calls == 3  # at the start, then every 50 of its own steps


def test_rows_mark_the_first_step_of_each_episode(replay):
    cfg = config(mode="off")
    w = worker(cfg, None, replay, env=FailingSteps(make_env(cfg.env), fail_steps={20, 45}))
    collect(w, 60)
    a, n = replay.arrays, len(replay)
    firsts = np.flatnonzero(a["is_first"][:n])
    lasts = np.flatnonzero(a["is_last"][:n])
    assert firsts.tolist() == [0, *(lasts + 1)[: len(firsts) - 1].tolist()]  # each episode starts after the last
    assert not (a["is_first"][:n] & a["is_last"][:n]).any()
