"""The Gymnasium environment end to end on the embedded simulator."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.driving_env import DrivingEnv
from envs.expert import expert_action

pytestmark = pytest.mark.sim


@pytest.fixture
def town01_env(town01):
    env = gym.make(envs.ENV_ID, town=town01, traffic="regular", seed=0)
    yield env
    env.close()


def test_check_env_passes_on_gym_make(town01):
    # With a spec, check_env makes further instances while this one runs (over TraCI: test_multi_env.py).
    env = gym.make(envs.ENV_ID, town=town01, traffic="regular", render_mode="rgb_array")
    try:
        check_env(env.unwrapped, skip_render_check=False)
    finally:
        env.close()


def test_observation_contract(town01_env):
    obs, info = town01_env.reset(seed=1, options={"route": 2})
    assert obs["bev"].shape == (15, 96, 96) and obs["bev"].dtype == np.uint8
    assert obs["state"].shape == (10,) and obs["state"].dtype == np.float32
    assert info["rgb_bev"].shape == (192, 192, 3)
    assert obs["bev"][0].max() == 255 and obs["bev"][1].max() == 255  # road and route drawn
    obs, reward, terminated, truncated, info = town01_env.step(np.array([0.5, 0.0], np.float32))
    assert {"command", "speed", "infractions", "reward_terms"} <= set(info)
    assert reward == pytest.approx(info["reward_terms"]["total"])


@pytest.mark.parametrize(
    "action,message",
    [
        (np.array([np.nan, 0.0]), "NaN"),
        (np.array([0.1, 0.2, 0.3]), "shape"),
        (np.array([[0.1, 0.2]]), "shape"),
    ],
)
def test_bad_actions_raise_clear_errors(town01_env, action, message):
    town01_env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        town01_env.step(action)


def test_out_of_range_route_and_wrong_suite(town01_env, town01):
    with pytest.raises(ValueError, match="0..24"):
        town01_env.reset(options={"route": 25})
    with pytest.raises(ValueError, match="Town02"):
        DrivingEnv._resolve_suite(town01, "nocrash_eval")


def test_expert_completes_a_route_on_the_generated_town():
    env = gym.make(envs.ENV_ID, town="Generated", traffic="empty", render_bev=False)
    try:
        env.reset(seed=0, options={"route": 0})
        done, steps = False, 0
        while not done:
            _, _, terminated, truncated, info = env.step(expert_action(*env.unwrapped.ground_truth()))
            done, steps = terminated or truncated, steps + 1
        result = info["episode_metrics"]
        assert not terminated and result["arrived"] == 1.0 and result["driving_score"] == 1.0
        assert result["distance_m"] > 200 and 1.5 < result["mean_speed"] < 6.0  # waits at red lights included
    finally:
        env.close()


def test_async_vector_env_runs_one_simulation_per_process():
    vec = envs.make_vector_env(2, town="Generated", traffic="regular", seed=3)
    try:
        obs, _ = vec.reset(seed=3)
        assert obs["bev"].shape == (2, 15, 96, 96)
        for _ in range(5):
            obs, reward, terminated, truncated, _ = vec.step(np.tile([0.5, 0.0], (2, 1)).astype(np.float32))
        assert reward.shape == (2,) and np.all(np.isfinite(reward))
        assert not np.array_equal(obs["bev"][0], obs["bev"][1])  # different routes / traffic
    finally:
        vec.close()


def test_stepping_after_the_end_asks_for_reset(town01_env):
    town01_env.reset(seed=0, options={"route": 0})
    done = False
    while not done:  # full throttle straight on: leaves the road or crashes soon
        _, _, terminated, truncated, _ = town01_env.step(np.array([1.0, 0.3], np.float32))
        done = terminated or truncated
    with pytest.raises(RuntimeError, match="reset"):
        town01_env.step(np.array([0.0, 0.0], np.float32))
