"""Supervision of a CARLA server process (envs/carla/server.py).

These tests exercise the supervision logic against a stand-in program (tests/standin_carla_server.py),
not CARLA itself: it crashes, hangs, ignores SIGTERM and answers a line protocol on demand. Only the
`carla`-marked test at the end starts a real server (deselected by default).
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from envs.carla.server import (
    CarlaNotFoundError,
    CarlaServer,
    CarlaServerError,
    CarlaServerSettings,
    CarlaTickTimeout,
    NoFreePortError,
    allocate_ports,
    find_carla_executable,
    port_is_free,
    server_command,
)
from tests.standin_carla_server import MAP_NAME, VERSION

pytestmark = pytest.mark.sim

STANDIN = Path(__file__).with_name("standin_carla_server.py")


def line_request(host: str, port: int, request: str, timeout_s: float) -> str:
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        stream = sock.makefile("rw", encoding="utf-8", newline="\n")
        stream.write(request + "\n")
        stream.flush()
        return stream.readline().strip()


def line_probe(host: str, port: int, timeout_s: float) -> tuple[str, str]:
    """The stand-in's answer to CARLA's get_server_version / get_map."""
    return line_request(host, port, "version", timeout_s), line_request(host, port, "map", timeout_s)


def standin(settings: CarlaServerSettings, *modes: str, crash_after: float = 1.0):
    """A launcher running the stand-in with the real CARLA flags; modes[i] for the i-th launch
    (the last one repeats)."""
    calls = []

    def launch(rpc: int) -> list[str]:
        mode = modes[min(len(calls), len(modes) - 1)]
        calls.append(rpc)
        flags = server_command("CarlaUE4.sh", settings, rpc)[1:]
        return [sys.executable, str(STANDIN), *flags, "--mode", mode, "--crash-after", str(crash_after)]

    launch.calls = calls
    return launch


def make_server(tmp_path, *modes: str, crash_after: float = 1.0, **overrides) -> CarlaServer:
    fields = {"rpc_port": 0, "ready_timeout_s": 10.0, "stop_grace_s": 0.5, "log_dir": str(tmp_path / "logs")}
    settings = CarlaServerSettings(**{**fields, **overrides})
    return CarlaServer(settings, probe=line_probe, launcher=standin(settings, *modes, crash_after=crash_after))


def group_gone(pgid: int) -> bool:
    """No live process left in the group (zombies waiting for init to reap them count as gone)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return False
    return True


def wait_until(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def free_block() -> int:
    """An OS-chosen port P with P..P+2 free."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("", 0))
            port = sock.getsockname()[1]
        if port + 3 < 65535 and all(port_is_free(p) for p in range(port, port + 3)):
            return port
    raise RuntimeError("no free port block")


def test_ready_server_reports_version_map_and_ports(tmp_path):
    with make_server(tmp_path, "ok") as server:
        assert server.alive() and (server.version, server.map_name) == (VERSION, MAP_NAME)
        rpc, tm = server.rpc_port, server.tm_port
        assert tm not in (rpc, rpc + 1, rpc + 2)
        assert not port_is_free(rpc) and not port_is_free(rpc + 1)  # the stand-in binds rpc and streaming
        assert server.launches == 1 and server.log_path == tmp_path / "logs" / f"carla-{rpc}-1.log"
        assert any(f"rpc port {rpc}" in line for line in server.last_log_lines())
        server.check()  # running: no error
        pgid = server.pgid
    assert not server.alive() and wait_until(lambda: group_gone(pgid))


def test_command_line():
    base = CarlaServerSettings()
    command = server_command("/carla/CarlaUE4.sh", base, 2000)
    assert command[:6] == [
        "/carla/CarlaUE4.sh",
        "-RenderOffScreen",
        "-nosound",
        "-carla-rpc-port=2000",
        "-carla-streaming-port=2001",
        "-quality-level=Low",
    ]
    assert "-nullrhi" not in command and not any(a.startswith("-graphicsadapter") for a in command)
    gpu = server_command("/c.sh", CarlaServerSettings(gpu_index=1, extra_args=("-foo",)), 3000)
    assert gpu[-2:] == ["-graphicsadapter=1", "-foo"]
    nullrhi = server_command("/c.sh", CarlaServerSettings(nullrhi=True, gpu_index=1, quality_level="Epic"), 3000)
    assert "-nullrhi" in nullrhi and "-quality-level=Epic" in nullrhi
    assert not any(a.startswith("-graphicsadapter") for a in nullrhi)


def test_crash_after_ready_is_detected_and_restart_relaunches(tmp_path):
    server = make_server(tmp_path, "crash", "ok", crash_after=1.0)
    try:
        server.start()
        first_pid = server.pid
        assert wait_until(lambda: not server.alive(), timeout_s=10)
        with pytest.raises(CarlaServerError, match="exit code 3") as info:
            server.check()
        assert "Signal 11 caught." in str(info.value)
        server.restart("crashed")
        assert server.alive() and server.pid != first_pid
        assert (server.launches, server.restarts) == (2, 1)
        assert line_probe("127.0.0.1", server.rpc_port, 2.0) == (VERSION, MAP_NAME)
    finally:
        server.stop()


def test_crash_at_start_raises_with_its_log(tmp_path):
    server = make_server(tmp_path, "crash-at-start")
    with pytest.raises(CarlaServerError, match="exited with code 1 during startup") as info:
        server.start()
    assert "stand-in failed to initialise the renderer" in str(info.value)
    assert not server.alive() and server.launches == 1


def test_hang_times_out_with_log_and_leaves_no_process(tmp_path):
    server = make_server(tmp_path, "hang", ready_timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(CarlaServerError, match="not ready within 1.5 s") as info:
        server.start()
    assert time.monotonic() - started < 5
    assert "never opens its port" in str(info.value)
    assert not server.alive() and wait_until(lambda: group_gone(server.pgid))


def test_port_in_use_moves_to_another(tmp_path):
    port = free_block()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        with make_server(tmp_path, "ok", rpc_port=port) as server:
            assert server.rpc_port == port + 3  # preferred + 3k keeps the configured range
            assert line_probe("127.0.0.1", server.rpc_port, 2.0) == (VERSION, MAP_NAME)


def test_port_lost_at_launch_is_retried(tmp_path):
    """Another process binds the port between allocation and the server's own bind."""
    settings = CarlaServerSettings(rpc_port=0, ready_timeout_s=10.0, stop_grace_s=0.5, log_dir=str(tmp_path))
    inner = standin(settings, "ok")
    thief = socket.socket()

    def launcher(rpc: int) -> list[str]:
        if not inner.calls:
            thief.bind(("127.0.0.1", rpc))
        return inner(rpc)

    try:
        with CarlaServer(settings, probe=line_probe, launcher=launcher) as server:
            assert server.launches == 2 and server.rpc_port != inner.calls[0]
            assert server.version == VERSION
    finally:
        thief.close()


def test_no_free_port_names_ports_tried():
    port = free_block()
    with socket.socket() as taken:
        taken.bind(("", port))
        taken.listen(1)
        with pytest.raises(NoFreePortError, match=str(port)):
            allocate_ports("", port, max_attempts=1)


def test_slow_tick_raises_tick_timeout(tmp_path):
    with make_server(tmp_path, "slow-tick", tick_timeout_s=0.3) as server:
        with server.tick_guard() as timeout_s:  # the stand-in answers version and map, not tick
            assert timeout_s == 0.3
            line_request("127.0.0.1", server.rpc_port, "version", timeout_s)
        with pytest.raises(CarlaTickTimeout, match="timed out"), server.tick_guard() as timeout_s:
            line_request("127.0.0.1", server.rpc_port, "tick", timeout_s)
        with pytest.raises(CarlaTickTimeout, match="took"):
            server.watch_tick(time.monotonic() - 1.0)
        server.watch_tick(time.monotonic())


def test_tick_on_a_dead_server_reports_the_crash(tmp_path):
    with make_server(tmp_path, "ok") as server:
        os.killpg(server.pgid, signal.SIGKILL)
        assert wait_until(lambda: not server.alive())
        with pytest.raises(CarlaServerError, match="died with exit code -9"), server.tick_guard() as timeout_s:
            line_request("127.0.0.1", server.rpc_port, "tick", timeout_s)


def test_stop_kills_whole_group_even_when_sigterm_is_ignored(tmp_path):
    server = make_server(tmp_path, "ignore-sigterm", stop_grace_s=0.3)
    server.start()
    assert wait_until(lambda: any("child pid" in line for line in server.last_log_lines()))
    child = int(next(line for line in server.last_log_lines() if line.startswith("child pid")).split()[-1])
    assert os.getpgid(child) == server.pgid  # the child is in the server's group
    pgid = server.pgid
    server.stop()
    server.stop()  # idempotent
    assert not server.alive() and wait_until(lambda: group_gone(pgid))


def test_periodic_restart(tmp_path):
    server = make_server(tmp_path, "ok", restart_every_s=0.5)
    try:
        server.start()
        first_pid = server.pid
        assert not server.maybe_periodic_restart()
        time.sleep(0.6)
        assert server.maybe_periodic_restart()
        assert server.alive() and server.pid != first_pid
        assert (server.launches, server.restarts) == (2, 1)
        assert not server.maybe_periodic_restart()
    finally:
        server.stop()
    assert not make_server(tmp_path, "ok").maybe_periodic_restart()  # 0: never


def test_missing_installation_names_the_paths_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("CARLA_ROOT", str(tmp_path / "env-root"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = CarlaServerSettings(carla_root=str(tmp_path / "config-root"))
    with pytest.raises(CarlaNotFoundError) as info:
        find_carla_executable(settings)
    message = str(info.value)
    for path in (
        tmp_path / "config-root",
        tmp_path / "env-root",
        Path("/opt/carla-simulator"),
        tmp_path / "home" / "carla",
        tmp_path / "home" / "CARLA_0.9.16",
    ):
        assert str(path / "CarlaUE4.sh") in message
    assert "CARLA_ROOT" in message and isinstance(info.value, FileNotFoundError)
    with pytest.raises(CarlaNotFoundError):
        CarlaServer(settings)  # fails at construction, before any launch

    script = tmp_path / "env-root" / "CarlaUE4.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    with pytest.raises(CarlaNotFoundError, match="not executable"):
        find_carla_executable(settings)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    assert find_carla_executable(settings) == script
    explicit = tmp_path / "x.sh"
    explicit.write_text("#!/bin/sh\n")
    explicit.chmod(0o755)
    assert find_carla_executable(CarlaServerSettings(executable=str(explicit), carla_root=str(tmp_path))) == explicit


@pytest.mark.carla
def test_real_carla_server_starts(tmp_path):
    try:
        find_carla_executable(CarlaServerSettings())
    except CarlaNotFoundError as exc:
        pytest.skip(str(exc))
    settings = CarlaServerSettings(
        rpc_port=0, nullrhi=os.environ.get("MENTOR_CARLA_NULLRHI") == "1", ready_timeout_s=180, log_dir=str(tmp_path)
    )
    with CarlaServer(settings) as server:
        assert server.version and server.version.startswith("0.9")
        assert server.map_name and "Town" in server.map_name


def test_servers_of_a_killed_launcher_are_reaped_and_others_are_not(tmp_path):
    """A rollout actor killed with SIGKILL cannot stop its server (own session); the next
    supervisor launched from the same log directory kills it."""
    import subprocess

    child_code = (
        "import sys, time\n"
        "from tests.test_carla_server import make_server\n"
        "from pathlib import Path\n"
        "server = make_server(Path(sys.argv[1]), 'ok')\n"
        "server.start()\n"
        "print(server.pgid, flush=True)\n"
        "time.sleep(600)\n"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", child_code, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    try:
        orphan_pgid = int(launcher.stdout.readline())
    finally:
        launcher.kill()
        launcher.wait()
    assert not group_gone(orphan_pgid)  # the launcher's death did not take the server with it

    mine = make_server(tmp_path, "ok")  # a live supervisor's server is not an orphan
    mine.start()
    try:
        from envs.carla.server import reap_orphans

        assert reap_orphans(tmp_path / "logs") == 0  # start() already reaped the orphan
        assert wait_until(lambda: group_gone(orphan_pgid))
        assert mine.alive()
        assert [p.name for p in (tmp_path / "logs").glob("*.owner")] == [f"carla-{mine.rpc_port}.owner"]
    finally:
        mine.stop()
    assert list((tmp_path / "logs").glob("*.owner")) == []
