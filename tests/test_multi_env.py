"""Many driving environments in one process: the first simulation in libsumo, the others in SUMO
servers over TraCI (envs/sumo/connection.py), as gymnasium's checker and vector envs, SB3's vector
envs and RLlib's env runners create them."""

import os
import signal

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.route_suites import load_suite
from envs.sumo.simulation import SimulatorError, SumoSettings, SumoSimulation

pytestmark = pytest.mark.sim


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _drive(env: gym.Env, steps: int, seed: int = 5) -> list:
    """Observations, rewards and infraction lists of a fixed random drive."""
    obs, _ = env.reset(seed=seed, options={"route": 0})
    rng = np.random.default_rng(seed)
    trace = [obs["bev"]]
    for _ in range(steps):
        action = np.array([rng.uniform(0.2, 0.7), rng.uniform(-0.2, 0.2)], np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append((obs["bev"], obs["state"], reward, info["infractions"]))
        if terminated or truncated:
            break
    return trace


def _same(a: list, b: list) -> bool:
    return (
        len(a) == len(b)
        and all(
            np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) and x[2] == y[2] and x[3] == y[3]
            for x, y in zip(a[1:], b[1:])
        )
        and np.array_equal(a[0], b[0])
    )


def test_libsumo_and_traci_drive_the_same_episode(town01):
    first, second = envs.make_env(town=town01), envs.make_env(town=town01)
    try:
        assert (first.unwrapped.sim.transport, second.unwrapped.sim.transport) == ("libsumo", "traci")
        server = second.unwrapped.sim.server_pid
        assert first.unwrapped.sim.server_pid is None and _running(server)
        assert _same(_drive(first, 150), _drive(second, 150))
    finally:
        first.close()
        second.close()
    assert not _running(server)  # closing stops (and reaps) the server


def test_the_libsumo_slot_is_free_again_after_close(town01):
    first = envs.make_env(town=town01)
    first.close()
    again = envs.make_env(town=town01)
    try:
        assert again.unwrapped.sim.transport == "libsumo"
    finally:
        again.close()


def test_a_killed_sumo_server_is_a_simulator_error_and_reset_restarts_it(town01):
    holder = SumoSimulation(SumoSettings(town=town01, traffic="empty"))
    sim = SumoSimulation(SumoSettings(town=town01, traffic="regular"))
    try:
        spec = load_suite("nocrash_train").routes[0]
        sim.reset(seed=1, route=spec)
        os.kill(sim.server_pid, signal.SIGKILL)
        with pytest.raises(SimulatorError, match="reset\\(\\) restarts"):
            for _ in range(5):
                sim.step(envs.types.Control(throttle=0.3))
        route, snap = sim.reset(seed=1, route=spec)  # a new server
        assert sim.server_pid is not None and snap.ego.speed == 0.0 and route.length > 0
        sim.step(envs.types.Control(throttle=0.3))
    finally:
        sim.close()
        holder.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec_runs_in_both_modes(town01, mode):
    vec = gym.make_vec(envs.ENV_ID, num_envs=3 if mode == "sync" else 2, vectorization_mode=mode, town=town01)
    try:
        obs, _ = vec.reset(seed=11)
        for _ in range(10):
            obs, reward, terminated, truncated, _ = vec.step(np.tile([0.5, 0.0], (vec.num_envs, 1)).astype(np.float32))
        assert obs["bev"].shape == (vec.num_envs, 15, 96, 96) and np.all(np.isfinite(reward))
        assert len({obs["bev"][i].tobytes() for i in range(vec.num_envs)}) == vec.num_envs  # own routes/traffic
        if mode == "sync":
            assert [e.unwrapped.sim.transport for e in vec.envs] == ["libsumo", "traci", "traci"]
    finally:
        vec.close()


def test_stable_baselines3_vector_envs_and_checker(town01):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    def factory():
        return gym.make(envs.ENV_ID, town=town01)

    for vec in (DummyVecEnv([factory] * 2), SubprocVecEnv([factory] * 2, start_method="spawn")):
        try:
            vec.seed(3)
            obs = vec.reset()
            for _ in range(5):
                obs, reward, done, _ = vec.step(np.tile([0.5, 0.0], (2, 1)).astype(np.float32))
            assert obs["bev"].shape == (2, 15, 96, 96) and reward.shape == (2,) and np.all(np.isfinite(reward))
        finally:
            vec.close()
    env = factory()
    try:
        sb3_check_env(env.unwrapped, warn=True)
    finally:
        env.close()
