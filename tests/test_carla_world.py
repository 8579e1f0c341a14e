"""The live CARLA world (envs/carla/world.py).

Tests marked `carla` need a CARLA 0.9.16 installation ($CARLA_ROOT) and a GPU or -nullrhi; run them
with `pytest -m carla`. Each starts its own supervised server. The first test needs no server: the
real carla client meets a port where nothing answers.
"""

import socket

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
    from envs.carla.server import CarlaServer, CarlaServerSettings

    settings = CarlaServerSettings(rpc_port=0, nullrhi=True, log_dir=str(tmp_path_factory.mktemp("carla-logs")))
    with CarlaServer(settings) as running:
        yield running


def _env(server, **kwargs) -> DrivingEnv:
    return DrivingEnv(
        town="Town01",
        backend="carla",
        server=server,
        carla=CarlaSettings(port=server.rpc_port, tm_port=server.tm_port),
        **kwargs,
    )


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


_KILL_SCRIPT = """
import os, signal, sys

from envs.carla.server import CarlaServer, CarlaServerSettings
from envs.carla.world import CarlaServerLost, CarlaSettings
from envs.driving_env import DrivingEnv

server = CarlaServer(CarlaServerSettings(rpc_port=0, nullrhi=True, log_dir=sys.argv[1]))
server.start()
env = DrivingEnv(town="Town01", traffic="empty", backend="carla", server=server,
                 carla=CarlaSettings(port=server.rpc_port, tm_port=server.tm_port))
env.reset(seed=1, options={"route": 1})
env.step(np.array([0.5, 0.0], np.float32))
os.killpg(server.pgid, signal.SIGKILL)
try:
    for _ in range(50):
        env.step(np.array([0.5, 0.0], np.float32))
except CarlaServerLost as exc:
    print("LOST", "new process" in str(exc), server.alive(), flush=True)
os._exit(0)  # the traffic manager's thread still points at the dead server
"""


@pytest.mark.carla
def test_a_killed_server_is_reported_as_lost_and_stopped(tmp_path):
    """In a child process: after a server death this process's traffic manager is unusable, so
    the world stops the server and raises CarlaServerLost (on Ray the actor is then replaced)."""
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[1],
    )
    assert "LOST True False" in result.stdout, result.stdout + result.stderr
