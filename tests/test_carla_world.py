"""The live CARLA world (envs/carla/world.py).

Tests marked `carla` need a CARLA 0.9.16 installation ($CARLA_ROOT) and a GPU or -nullrhi; run them
with `pytest -m carla`. Each starts its own supervised server. The first test needs no server: the
real carla client meets a port where nothing answers.
"""
import os
import signal
import socket

import numpy as np
import pytest

from envs.carla.world import CarlaSettings
from envs.driving_env import DrivingEnv
from envs.expert import expert_action
from envs.types import SimulatorError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_names_the_address_and_the_fix():
    port = _free_port()
    with pytest.raises(SimulatorError, match=rf"cannot reach a CARLA server at 127\.0\.0\.1:{port}.*launch"):
        DrivingEnv(backend="carla", carla=CarlaSettings(port=port, timeout_s=1.0))


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend 'carla2' is not known"):
        DrivingEnv(backend="carla2")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from cluster.carla_server import CarlaServer, CarlaServerSettings

    settings = CarlaServerSettings(rpc_port=0, nullrhi=True, log_dir=str(tmp_path_factory.mktemp("carla-logs")))
    with CarlaServer(settings) as running:
        yield running


def _env(server, **kwargs) -> DrivingEnv:
    return DrivingEnv(town="Town01", backend="carla", server=server,
                      carla=CarlaSettings(port=server.rpc_port, tm_port=server.tm_port), **kwargs)


@pytest.mark.carla
def test_expert_drives_a_route_with_traffic(server):
    env = _env(server, traffic="regular")
    try:
        env.reset(seed=0, options={"route": 0})
        seen_vehicles, seen_light, infractions = 0, False, []
        for _ in range(600):
            snapshot, route, index = env.unwrapped.ground_truth()
            seen_vehicles = max(seen_vehicles, len(snapshot.vehicles))
            seen_light = seen_light or snapshot.next_light is not None
            obs, _, terminated, truncated, info = env.step(expert_action(snapshot, route, index))
            infractions += info["infractions"]
            if terminated or truncated:
                break
        assert obs["bev"].shape == (15, 96, 96) and obs["bev"][0].any()  # road drawn from carla.Map
        assert info["route_completion"] > 0.2
        assert seen_vehicles > 0 and seen_light
        assert not [i for i in infractions if i.startswith("collision")]
    finally:
        env.close()


@pytest.mark.carla
def test_passes_gymnasium_check(server):
    from gymnasium.utils.env_checker import check_env

    env = _env(server, traffic="empty")
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


@pytest.mark.carla
def test_a_killed_server_is_restarted_and_the_env_resets(server):
    env = _env(server, traffic="empty")
    try:
        env.reset(seed=1, options={"route": 1})
        env.step(np.array([0.5, 0.0], np.float32))
        restarts = server.restarts
        os.killpg(server.pgid, signal.SIGKILL)
        with pytest.raises(SimulatorError, match="reset\\(\\) reconnects to the restarted server"):
            for _ in range(50):
                env.step(np.array([0.5, 0.0], np.float32))
        assert server.restarts == restarts + 1 and server.alive()
        obs, _ = env.reset(seed=1, options={"route": 1})
        assert obs["bev"][0].any()
    finally:
        env.close()


def test_local_mode_without_a_carla_install_names_the_paths_searched(tmp_path, monkeypatch):
    from actors.local_runtime import LocalRuntime
    from cluster.carla_server import CarlaNotFoundError
    from configs.loader import load_config

    monkeypatch.delenv("CARLA_ROOT", raising=False)
    config = load_config(None, ["env.backend=carla", f"env.carla.carla_root={tmp_path}/nowhere",
                                "workers.num_workers=1", "feedback.mode=off"])
    with pytest.raises(CarlaNotFoundError, match=rf"(?s)searched:.*{tmp_path}/nowhere/CarlaUE4.sh.*CARLA_ROOT"):
        LocalRuntime(config)
