"""RLlib's DreamerV3 baseline (baselines/rllib/dreamerv3.py): the BEV -> 64x64x3 image it sees (fast),
and a tiny online training run on a local Ray cluster whose checkpoint then drives Mentor's env
through the Policy protocol and the EvaluationWorker (ray, slow). The run directory and the command
of all three RLlib baselines: tests/test_rllib_baselines.py."""

import dataclasses
import os

import gymnasium as gym
import numpy as np
import pytest

from baselines.rllib.dreamerv3 import IMAGE_SHAPE, BevImageObservation, bev_image, max_pool_to
from envs.bev import CH_LANES, CH_LIGHTS, CH_ROAD, CH_ROUTE, CH_VEHICLES, CH_WALKERS
from envs.spaces import BEV_SHAPE


def _naive_pool(masks: np.ndarray) -> np.ndarray:
    """96 -> 64 max-pool by definition: nearest 2x upsampling, then 3x3 max blocks."""
    up = masks.repeat(2, axis=-2).repeat(2, axis=-1)
    return up.reshape(*masks.shape[:-2], 64, 3, 64, 3).max(axis=(-3, -1))


def test_max_pool_matches_its_definition_and_keeps_single_pixels():
    masks = np.random.default_rng(0).integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)
    assert np.array_equal(max_pool_to(masks), _naive_pool(masks))
    dot = np.zeros((96, 96), np.uint8)
    dot[95, 0] = dot[47, 50] = 255  # one pixel each: both survive the 1.5x shrink
    pooled = max_pool_to(dot)
    assert pooled[63, 0] == 255 and pooled[31, 33] == 255 and np.count_nonzero(pooled) == 2


def test_bev_image_shape_dtype_and_channels():
    bev = np.zeros(BEV_SHAPE, np.uint8)
    bev[CH_ROAD, 40:96, 30:66] = 255
    bev[CH_ROUTE, 40:96, 42:54] = 255
    bev[CH_LANES, :, 36] = 255  # lane markings are left out
    bev[CH_VEHICLES + 3, 0:6, 0:6] = 255  # a vehicle at t ...
    bev[CH_VEHICLES + 2, 0:6, 6:12] = 255  # ... where it was 5 frames before
    bev[CH_VEHICLES + 0, 90:96, 90:96] = 255  # 15 frames before: left out
    bev[CH_WALKERS + 3, 12:15, 90:93] = 255  # a walker at t
    bev[CH_LIGHTS + 3, 30, 42:54] = 255  # a red stop line at t
    bev[CH_LIGHTS + 1, 60, 0:10] = 80  # a green one 10 frames before: left out

    image = bev_image(bev)
    assert image.shape == IMAGE_SHAPE == (64, 64, 3) and image.dtype == np.uint8
    road_map, obstacles, lights = image[..., 0], image[..., 1], image[..., 2]
    assert set(np.unique(road_map)) == {0, 96, 192}
    assert road_map[50, 32] == 192 and road_map[50, 22] == 96 and road_map[10, 10] == 0  # route on road; off-road
    assert road_map[50, 24] == 96  # where only a lane marking is
    assert obstacles[1, 1] == 255 and obstacles[1, 5] == 128  # vehicle now, and its trail
    assert obstacles[9, 61] == 255  # the walker
    assert obstacles[62, 62] == 0  # the old frame
    assert lights[20, 32] == 255 and np.count_nonzero(lights) == np.count_nonzero(lights[20])
    # A batch maps element-wise.
    batch = np.stack([bev, np.zeros_like(bev)])
    out = bev_image(batch)
    assert out.shape == (2, *IMAGE_SHAPE) and np.array_equal(out[0], image) and not out[1].any()
    with pytest.raises(ValueError, match="BEV masks"):
        bev_image(bev.astype(np.float32))


class _BevStub(gym.Env):
    observation_space = gym.spaces.Dict(
        {"bev": gym.spaces.Box(0, 255, BEV_SHAPE, np.uint8), "state": gym.spaces.Box(-1, 1, (10,), np.float32)}
    )
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def test_observation_wrapper_gives_the_image_dreamer_takes():
    env = BevImageObservation(_BevStub())
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == gym.spaces.Box(-1, 1, (2,), np.float32)  # unchanged
    obs, _ = env.reset()
    assert obs in env.observation_space
    obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8


def _require_rllib() -> None:
    """RLlib needs packages that the `ray` extras in pyproject.toml do not bring (ray[rllib]'s)."""
    try:
        import ray.rllib.algorithms.dreamerv3  # noqa: F401
    except ImportError as exc:
        message = f"RLlib does not import ({exc}): install dm_tree, lz4, ormsgpack, scipy (ray[rllib]'s packages)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def local_ray_2cpus():
    """A Ray cluster of this test's own, 2 CPUs (train_rllib uses a connected one and leaves it)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_dreamer_trains_checkpoints_and_acts_through_the_policy_protocol(local_ray_2cpus, town01, tmp_path):
    _require_rllib()
    import torch

    from baselines.rllib.baseline import evaluate_rllib, rl_module_path, train_rllib
    from baselines.rllib.config import RLLIB_CONFIG_DIR, load_rllib_config
    from baselines.rllib.dreamerv3 import RllibDreamerPolicy
    from core import Policy
    from workers.assembly import make_env

    steps = 160  # debug.yaml's DreamerV3: nano, training ratio 8, B x T = 2 x 16, horizon 5
    config, settings = load_rllib_config(
        [RLLIB_CONFIG_DIR / "dreamerv3.yaml", RLLIB_CONFIG_DIR / "debug.yaml"],
        [f"env.town={town01}", "run.progress_every_s=10", f"run.total_env_steps={steps}"],
    )
    summary = train_rllib(config, settings, tmp_path / "dreamer")
    assert summary["env_steps"] >= steps and summary["updates"] >= 10
    assert 4 <= summary["replay_ratio"] <= 8  # the asked 8, less the updates-free first B x T steps
    assert rl_module_path(summary["checkpoint"]).is_dir()
    assert (tmp_path / "dreamer" / "episodes.csv").is_file()

    policy = RllibDreamerPolicy.from_checkpoint(summary["checkpoint"])
    assert isinstance(policy, Policy)
    env = make_env(config.env)
    try:
        obs, _ = env.reset(seed=0, options={"route": 0})
        carry, is_first = policy.initial_carry(1), True
        for i in range(12):
            batch = {"bev": obs["bev"][None], "state": obs["state"][None]}
            carry, action = policy.act(carry, batch, np.array([is_first]), explore=i % 2 == 0, step=0)
            assert action.shape == (1, 2) and action.dtype == np.float32
            assert np.all(np.isfinite(action)) and np.all(np.abs(action) <= 1.0)
            obs, _, terminated, truncated, _ = env.step(action[0])
            is_first = terminated or truncated
            if is_first:
                obs, _ = env.reset()
    finally:
        env.close()

    # is_first resets the recurrent state: from a carry 12 steps in, a first step gives the same h
    # (deterministic) and, with the same z draw, the same action as from the initial carry; without
    # is_first the carry is remembered. (Same batch size in the seeded calls: z's categorical draws
    # depend on the whole batch's probabilities.)
    batch = {"bev": obs["bev"][None], "state": obs["state"][None]}
    initial = policy.initial_carry(1)  # before seeding: it draws from the prior net too
    torch.manual_seed(0)
    fresh_carry, fresh_action = policy.act(initial, batch, np.array([True]), explore=False, step=0)
    torch.manual_seed(0)
    reset_carry, reset_action = policy.act(carry, batch, np.array([True]), explore=False, step=0)
    assert torch.allclose(reset_carry["h"], fresh_carry["h"], atol=1e-6)
    assert torch.equal(reset_carry["z"], fresh_carry["z"]) and np.allclose(reset_action, fresh_action, atol=1e-6)
    kept_carry, _ = policy.act(carry, batch, np.array([False]), explore=False, step=0)
    assert not torch.allclose(kept_carry["h"], fresh_carry["h"], atol=1e-4)
    # ... and per row of a batch.
    both = {k: np.repeat(v, 2, axis=0) for k, v in batch.items()}
    dirty = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in carry.items()}
    mixed_carry, _ = policy.act(dirty, both, np.array([True, False]), explore=True, step=0)
    assert torch.allclose(mixed_carry["h"][0], fresh_carry["h"][0], atol=1e-6)
    assert torch.allclose(mixed_carry["h"][1], kept_carry["h"][0], atol=1e-6)

    on_town01 = dataclasses.replace(
        config, eval=dataclasses.replace(config.eval, town=town01, routes=(0,), max_steps=15)
    )
    rows = evaluate_rllib(on_town01, settings, summary["checkpoint"])
    assert set(rows) == {"route 0", "mean"}
    assert np.isfinite(rows["mean"]["route_completion"]) and rows["mean"]["episodes"] == 1
