"""The rollout worker on the real embedded simulator, in one process (local mode pieces)."""
import dataclasses

import numpy as np
import pytest

from actors.feedback_client import InProcessFeedbackClient, SyncFeedbackClient
from actors.local_runtime import make_env
from actors.rollout_worker import RolloutWorker
from configs.loader import load_config
from inference.expert_advisor import ExpertAdvisor
from inference.test_models import FaultyModel, SlowModel
from envs.types import SimulatorError
from learners.replay import ReplayBuffer


class ConstantPolicy:
    def act(self, bev, state, step, explore):
        return np.tile(np.array([0.4, 0.0], np.float32), (len(bev), 1))

    def load_policy_state(self, state):
        pass


def config(**feedback):
    base = load_config(None, ["env.town=Generated", "env.traffic=regular", "workers.num_workers=1",
                              "workers.random_steps=0", "workers.chunk_size=16"])
    return dataclasses.replace(base, feedback=dataclasses.replace(base.feedback, **feedback))


def worker(cfg, client, replay):
    return RolloutWorker(cfg, worker_uid=3, make_env=lambda: make_env(cfg.env), policy=ConstantPolicy(),
                         feedback=client, ship=replay.add, model_inputs=ExpertAdvisor.inputs, seed=1)


def collect(w, ticks: int) -> None:
    try:
        w.run(ticks)
        w.flush()
    finally:
        w.close()


@pytest.fixture
def replay():
    return ReplayBuffer(4096)


def test_async_feedback_reaches_the_replay_with_masks(replay):
    cfg = config(bundle_steps=4)
    w = worker(cfg, InProcessFeedbackClient(ExpertAdvisor()), replay)
    collect(w, 200)
    stored = replay.arrays
    n = len(replay)
    transitions = ~stored["is_last"][:n]
    assert n >= 150 and stored["stream_id"][:n].tolist() == [3] * n
    assert np.all(np.diff(stored["step"][:n]) == 1)  # one stream, in step order
    assert stored["vlm_action_mask"][:n][transitions].mean() > 0.95
    assert w.feedback_report()["availability"] > 0.95


def test_backpressure_keeps_pending_bounded_with_a_slow_model(replay):
    cfg = config(bundle_steps=1, max_pending=8, max_pending_age_s=10.0, deadline_s=10.0)
    w = worker(cfg, InProcessFeedbackClient(SlowModel(ExpertAdvisor(), delay_s=0.02), max_batch_size=2), replay)
    peak = 0
    try:
        for _ in range(60):
            w.tick()
            peak = max(peak, w.feedback_report()["pending"])
        w.flush()
    finally:
        w.close()
    assert peak <= 8 + 1  # the bound, plus the final observation of an episode that may end
    assert w.stats.backpressure_waits > 0
    assert w.feedback_report()["availability"] == 1.0  # it waited: nothing was dropped


def test_faulty_model_gives_mask_zero_never_defaults(replay):
    cfg = config(bundle_steps=2, deadline_s=0.5)
    w = worker(cfg, InProcessFeedbackClient(FaultyModel(ExpertAdvisor(), error_rate=0.5, seed=0)), replay)
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


def test_sync_mode_answers_everything(replay):
    cfg = config(mode="sync")
    w = worker(cfg, SyncFeedbackClient(ExpertAdvisor()), replay)
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
    w = RolloutWorker(cfg, worker_uid=1, make_env=lambda: FailingSteps(make_env(cfg.env), fail_steps={30},
                                                                       fail_resets=1),
                      policy=ConstantPolicy(), feedback=None, ship=replay.add, seed=2)
    collect(w, 60)
    n = len(replay)
    stored = replay.arrays
    assert w.stats.simulator_failures == 2  # the step, then the first reset after it
    assert w.stats.episodes == 0  # the cut-short episode is not scored
    assert n == 61  # 60 transitions (the failed one bridged) and the final row of the cut episode
    ends = np.flatnonzero(stored["is_last"][:n])
    assert len(ends) == 1 and stored["truncated"][ends[0] - 1] and not stored["terminated"][ends[0] - 1]
    np.testing.assert_array_equal(stored["bev"][ends[0]], stored["bev"][ends[0] - 1])  # bridged at the last obs
