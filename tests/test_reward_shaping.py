"""Sample-time reward shaping against hand-computed values."""
import numpy as np
import pytest

from learners.reward_shaping import RewardShaper, nstep_bonus


def batch(**overrides):
    base = {
        "reward": np.array([1.0, 2.0], np.float32),
        "nstep_weight": np.array([[1.0, 0.5], [1.0, 0.0]], np.float32),
        "nstep_clip_margin": np.array([[0.3, 0.1], [0.2, 0.9]], np.float32),
        "nstep_clip_margin_mask": np.array([[1, 1], [0, 1]], np.float32),
        "nstep_safety": np.array([[1.0, 0.0], [0.75, 0.5]], np.float32),
        "nstep_safety_mask": np.array([[1, 1], [1, 0]], np.float32),
    }
    return base | overrides


def test_nstep_bonus_weights_and_masks():
    values = np.array([[1.0, 2.0, np.nan]])  # a masked nan must not leak in
    assert nstep_bonus(values, np.array([[1, 1, 0]]), np.array([[1.0, 0.5, 0.25]]))[0] == pytest.approx(2.0)


def test_clip_bonus_is_normalised_clipped_scaled_and_discounted():
    shaper = RewardShaper(clip_scale=0.25)
    shaper.margins.mean, shaper.margins.var = 0.2, 0.01  # std 0.1
    reward, metrics = shaper(batch())
    # row 0: bonuses clip((0.3-0.2)/0.1)=1 and clip((0.1-0.2)/0.1)=-1 -> 1 + 0.5 * -1 = 0.5
    # row 1: step 0 has no margin, step 1 is past the path (weight 0) -> 0
    np.testing.assert_allclose(reward, [1.0 + 0.25 * 0.5, 2.0], rtol=1e-4)
    assert metrics["clip_bonus"] == pytest.approx(0.25 * 0.5 / 2, rel=1e-3)


def test_semantic_reward_maps_goal_probability_to_plus_minus_one():
    reward, _ = RewardShaper(semantic_scale=0.5)(batch())
    # row 0: (2*1-1) + 0.5 * (2*0-1) = 0.5 ; row 1: (2*0.75-1) = 0.5 (step 1 masked)
    np.testing.assert_allclose(reward, [1.0 + 0.25, 2.0 + 0.25], rtol=1e-5)


def test_observe_uses_only_available_margins_of_transition_rows():
    shaper = RewardShaper(clip_scale=0.25)
    chunk = {"clip_margin": np.array([0.2, 0.4, 9.0, 7.0], np.float32),
             "clip_margin_mask": np.array([1, 1, 0, 1], np.float32),
             "is_last": np.array([False, False, False, True])}
    shaper.observe(chunk)
    assert shaper.margins.mean == pytest.approx(0.3, abs=1e-4)
    restored = RewardShaper(clip_scale=0.25)
    restored.load_state_dict(shaper.state_dict())
    assert restored.margins.mean == shaper.margins.mean and restored.margins.var == shaper.margins.var


def test_inactive_shaper_is_off():
    assert not RewardShaper().active and RewardShaper(clip_scale=0.1).active
