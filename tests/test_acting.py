"""The collection policies: the expert with DART-style held perturbations, and random actions."""

from types import SimpleNamespace

import numpy as np

from configs.schema import CollectConfig
from envs.expert import expert_action
from tests.test_expert import snapshot, straight
from workers.acting import ExpertPolicy, RandomPolicy


def fake_env():
    action = expert_action(snapshot(speed=3.0), straight(), 0)
    return SimpleNamespace(unwrapped=SimpleNamespace(expert_action=lambda: action)), action


def actions(policy, n, first_at=()):
    return np.stack([policy.act(None, {}, np.array([i in first_at]), explore=True, step=0)[1][0] for i in range(n)])


def test_held_perturbations_stay_for_a_window_then_change():
    env, expert = fake_env()
    policy = ExpertPolicy(env, CollectConfig(perturb_std=0.3, perturb_probability=1.0, perturb_hold_steps=4), seed=0)
    offsets = actions(policy, 12, first_at=(0,)) - expert
    assert np.allclose(offsets[0:4], offsets[0]) and np.allclose(offsets[4:8], offsets[4])
    assert not np.allclose(offsets[0], offsets[4]) and np.abs(offsets).max() > 0.01


def test_a_new_episode_starts_a_new_window():
    env, expert = fake_env()
    policy = ExpertPolicy(env, CollectConfig(perturb_std=0.3, perturb_probability=1.0, perturb_hold_steps=10), seed=1)
    offsets = actions(policy, 6, first_at=(0, 3)) - expert
    assert np.allclose(offsets[0:3], offsets[0]) and not np.allclose(offsets[3], offsets[0])


def test_without_perturbation_or_exploration_it_is_the_expert():
    env, expert = fake_env()
    plain = ExpertPolicy(env, CollectConfig(perturb_std=0.0), seed=0)
    assert np.allclose(actions(plain, 3), expert)
    noisy = ExpertPolicy(env, CollectConfig(perturb_std=0.5, perturb_probability=1.0), seed=0)
    _, action = noisy.act(None, {}, np.array([True]), explore=False, step=0)
    assert np.allclose(action[0], expert)


def test_perturbed_actions_stay_in_range_and_random_covers_it():
    env, _ = fake_env()
    wild = ExpertPolicy(env, CollectConfig(perturb_std=5.0, perturb_probability=1.0, perturb_hold_steps=1), seed=0)
    assert np.abs(actions(wild, 50)).max() <= 1.0
    random = actions(RandomPolicy(seed=0), 500)
    assert random.min() < -0.9 and random.max() > 0.9 and random.dtype == np.float32
