"""Sample-time reward shaping against hand-computed values: per-step terms, discounted along an
n-step path for transitions, added step by step for sequences."""

import numpy as np
import pytest

from learners.batches import SequenceBatch, TransitionBatch
from learners.replay import ReplayBuffer, empty_chunk
from learners.reward_shaping import RewardShaper


def steps(**overrides):
    base = {
        "clip_margin": np.array([[0.3, 0.1], [0.2, 0.9]], np.float32),
        "clip_margin_mask": np.array([[1, 1], [0, 1]], np.float32),
        "safety": np.array([[1.0, 0.0], [0.75, np.nan]], np.float32),  # a masked nan must not leak in
        "safety_mask": np.array([[1, 1], [1, 0]], np.float32),
    }
    return base | overrides


def test_clip_bonus_is_normalised_clipped_scaled_and_masked_per_step():
    shaper = RewardShaper(clip_scale=0.25)
    shaper.margins.mean, shaper.margins.var = 0.2, 0.01  # std 0.1
    terms = shaper.terms(steps())
    # clip((0.3-0.2)/0.1) = 1, clip((0.1-0.2)/0.1) = -1; (0.2 masked) 0, clip((0.9-0.2)/0.1) = 1
    np.testing.assert_allclose(terms["clip_bonus"], 0.25 * np.array([[1, -1], [0, 1]]), rtol=1e-4)
    assert set(terms) == {"clip_bonus"}


def test_semantic_reward_maps_goal_probability_to_plus_minus_one():
    terms = RewardShaper(semantic_scale=0.5).terms(steps())
    np.testing.assert_allclose(terms["semantic_reward"], 0.5 * np.array([[1.0, -1.0], [0.5, 0.0]]))


def test_observe_uses_only_available_margins_of_transition_rows():
    shaper = RewardShaper(clip_scale=0.25)
    chunk = {
        "clip_margin": np.array([0.2, 0.4, 9.0, 7.0], np.float32),
        "clip_margin_mask": np.array([1, 1, 0, 1], np.float32),
        "is_last": np.array([False, False, False, True]),
    }
    shaper.observe(chunk)
    assert shaper.margins.mean == pytest.approx(0.3, abs=1e-4)
    restored = RewardShaper(clip_scale=0.25)
    restored.load_state_dict(shaper.state_dict())
    assert restored.margins.mean == shaper.margins.mean and restored.margins.var == shaper.margins.var


def test_inactive_shaper_is_off():
    assert not RewardShaper().active and RewardShaper(clip_scale=0.1).active


def one_stream(n: int) -> ReplayBuffer:
    """Rewards 1 per step, safety 1 (goal reached) on even steps and 0 on odd ones, all available."""
    chunk = empty_chunk(n)
    chunk["step"][:] = np.arange(n)
    chunk["reward"][:] = 1.0
    chunk["safety"][:] = np.arange(n) % 2 == 0
    chunk["safety_mask"][:] = 1.0
    chunk["is_first"][0] = True
    replay = ReplayBuffer(64, seed=0)
    replay.add(chunk)
    return replay


def test_transition_batch_discounts_the_terms_like_the_env_reward():
    replay = one_stream(10)
    batch, metrics = TransitionBatch(n_step=2, gamma=0.5).sample(replay, 32, RewardShaper(semantic_scale=1.0))
    start_even = batch["step"] % 2 == 0
    # even start: env 1 + 0.5 * 1 = 1.5, semantic (+1) + 0.5 * (-1) = 0.5 -> 2.0; odd start: 1.5 + (-1 + 0.5) = 1.0
    np.testing.assert_allclose(batch["reward"], np.where(start_even, 2.0, 1.0))
    assert metrics["semantic_reward"] == pytest.approx(np.where(start_even, 0.5, -0.5).mean())


def test_sequence_batch_adds_the_terms_step_by_step():
    replay = one_stream(10)
    batch, _ = SequenceBatch(length=4).sample(replay, 16, RewardShaper(semantic_scale=1.0))
    assert batch["reward"].shape == (16, 4)
    np.testing.assert_allclose(batch["reward"], np.where(batch["step"] % 2 == 0, 2.0, 0.0))
