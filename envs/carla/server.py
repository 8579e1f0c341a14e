"""Launch and supervise one CARLA server (`CarlaUE4.sh`) per rollout actor.

Plain Python, no Ray: a rollout actor owns a `CarlaServer` and calls it from its own process, and
the same code runs alone for debugging. The supervisor

- finds `CarlaUE4.sh` (explicit path, configured root, $CARLA_ROOT, the usual install places) and
  names every path it searched when there is none;
- picks free ports: rpc P, streaming P+1, secondary P+2 (all bound by the server), plus a traffic
  manager port of its own (P+6000 where free, docs/architecture.md §8);
- starts the server in a new session (its own process group: CarlaUE4.sh runs the UE4 binary as a
  child, and a kill must reach both), with stdout and stderr in a log file per launch;
- waits for readiness: the rpc port accepts connections, then the server answers its version and
  map, all within `ready_timeout_s`;
- reports a crash (`check`) or a tick that overran `tick_timeout_s` (`tick_guard`, `watch_tick`);
  the caller then `restart`s it and rebuilds its world and traffic manager;
- restarts periodically (`maybe_periodic_restart`) to contain CARLA's memory growth;
- stops by signalling the whole group: SIGTERM, a grace period, then SIGKILL.

Every failure message carries the last lines of the server's log, because the log is usually the
only place that says why a UE4 process went away.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SCRIPT_NAME = "CarlaUE4.sh"
# Searched after the configured paths, in this order.
DEFAULT_INSTALL_DIRS = ("/opt/carla-simulator", "~/carla", "~/CARLA_0.9.16")
PORTS_PER_SERVER = 3  # rpc P, streaming P+1, secondary P+2 (CARLA's default for the secondary port)
TM_PORT_OFFSET = 6000  # traffic manager at P+6000 when that port is free
LOG_TAIL_LINES = 20

_POLL_S = 0.05  # how often startup checks the process and the port
_PROBE_ATTEMPT_S = 10.0  # one readiness probe; CARLA answers slowly while it loads the map
_PORT_IN_USE_MARKERS = ("address already in use", "eaddrinuse")

Probe = Callable[[str, int, float], tuple[str, str]]
Launcher = Callable[[int], Sequence[str]]


class CarlaServerError(RuntimeError):
    """The server could not be started, died, or stopped answering; restart it."""


class CarlaTickTimeout(CarlaServerError):
    """A tick took longer than `tick_timeout_s`: treat the server as dead."""


class NoFreePortError(CarlaServerError):
    """No free set of ports was found within `max_port_attempts`."""


class CarlaNotFoundError(FileNotFoundError):
    """No CarlaUE4.sh in any of the searched places."""

    def __init__(self, searched: Sequence[Path], not_executable: Sequence[Path] = ()):
        self.searched = tuple(searched)
        lines = [f"CARLA server ({SCRIPT_NAME}) not found; searched:"]
        lines += [
            f"  {path}" + ("  (exists but is not executable)" if path in not_executable else "")
            for path in self.searched
        ]
        lines.append(
            "Install CARLA 0.9.16 and set $CARLA_ROOT to its directory, or set the config's CARLA "
            "path (carla_root, or executable for the script itself)."
        )
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class CarlaServerSettings:
    carla_root: str | None = None  # directory holding CarlaUE4.sh; None: $CARLA_ROOT
    executable: str | None = None  # explicit path to CarlaUE4.sh; wins over carla_root
    host: str = "127.0.0.1"  # where the client reaches the server (it listens on all interfaces)
    rpc_port: int = 2000  # 0: a free port from the OS (several servers on one node)
    # Vulkan adapter index for -graphicsadapter (None: the default GPU). Not CUDA_VISIBLE_DEVICES:
    # UE4 renders through Vulkan, which ignores it, and Vulkan's order need not match CUDA's.
    gpu_index: int | None = None
    nullrhi: bool = False  # no rendering at all: for BEV-only workers on nodes without a GPU
    quality_level: str = "Low"
    ready_timeout_s: float = 120.0  # port open, version and map answered, all within this
    tick_timeout_s: float = 20.0
    restart_every_s: float = 0.0  # 0: never; periodic restarts contain CARLA's memory growth
    max_port_attempts: int = 5
    log_dir: str = "runs/carla-logs"
    extra_args: tuple[str, ...] = ()
    stop_grace_s: float = 5.0  # between SIGTERM and SIGKILL


# -- finding the installation ------------------------------------------------------------------


def carla_search_paths(settings: CarlaServerSettings) -> list[Path]:
    """Where `find_carla_executable` looks, in order (duplicates removed)."""
    candidates: list[Path] = []
    if settings.executable:
        candidates.append(Path(settings.executable).expanduser())
    for root in (settings.carla_root, os.environ.get("CARLA_ROOT")):
        if root:
            candidates.append(Path(root).expanduser() / SCRIPT_NAME)
    candidates += [Path(d).expanduser() / SCRIPT_NAME for d in DEFAULT_INSTALL_DIRS]
    return list(dict.fromkeys(candidates))


def find_carla_executable(settings: CarlaServerSettings) -> Path:
    """The first CarlaUE4.sh found; `CarlaNotFoundError` lists every path searched."""
    searched = carla_search_paths(settings)
    not_executable = []
    for path in searched:
        if path.is_file():
            if os.access(path, os.X_OK):
                return path
            not_executable.append(path)
    raise CarlaNotFoundError(searched, not_executable)


# -- ports -------------------------------------------------------------------------------------


def port_is_free(port: int, host: str = "") -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR as CARLA's rpclib sets it, so a port
    held only by connections in TIME_WAIT (a server just stopped) counts as free."""
    if not 0 < port <= 65535:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _os_free_port(host: str = "") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _rpc_candidates(preferred: int, attempts: int, host: str) -> Iterator[int]:
    """`preferred`, preferred+3, ... (staying in the configured range, which firewalls may expect);
    ports from the OS when preferred is 0 or the range runs past 65535."""
    for k in range(attempts):
        port = preferred + PORTS_PER_SERVER * k if preferred > 0 else 0
        if port <= 0 or port + PORTS_PER_SERVER - 1 > 65535:
            port = _os_free_port(host)
        yield port


def allocate_ports(host: str, preferred: int, max_attempts: int = 5, exclude: Sequence[int] = ()) -> tuple[int, int]:
    """(rpc, tm) with rpc..rpc+2 and tm all free now. `host` is the address the server binds: ""
    (all interfaces) for CARLA. `exclude`: rpc ports not to use again (one lost a race at launch).

    A free port can still be taken between this check and the server's bind; `CarlaServer.start`
    retries that case with other ports."""
    tried = []
    for rpc in _rpc_candidates(preferred, max_attempts, host):
        tried.append(rpc)
        block = range(rpc, rpc + PORTS_PER_SERVER)
        if rpc in exclude or not all(port_is_free(p, host) for p in block):
            continue
        return rpc, _tm_port(rpc, host)
    raise NoFreePortError(
        f"no free CARLA ports (rpc P, P+1, P+2) after {len(tried)} attempts; rpc ports tried: {tried}"
    )


def _tm_port(rpc: int, host: str) -> int:
    """The traffic manager's port: rpc+6000 when free, else one from the OS outside rpc..rpc+2."""
    tm = rpc + TM_PORT_OFFSET
    if tm <= 65535 and port_is_free(tm, host):
        return tm
    while True:
        tm = _os_free_port(host)
        if not rpc <= tm < rpc + PORTS_PER_SERVER:
            return tm


def _port_accepts(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


# -- the command line and the real probe -------------------------------------------------------


def server_command(executable: str | os.PathLike, settings: CarlaServerSettings, rpc_port: int) -> list[str]:
    """CarlaUE4.sh's arguments: off-screen, silent, our ports, the quality level, and either no
    rendering (-nullrhi) or a chosen GPU (-graphicsadapter, a Vulkan adapter index)."""
    command = [
        str(executable),
        "-RenderOffScreen",
        "-nosound",
        f"-carla-rpc-port={rpc_port}",
        f"-carla-streaming-port={rpc_port + 1}",
        f"-quality-level={settings.quality_level}",
    ]
    if settings.nullrhi:
        command.append("-nullrhi")
    elif settings.gpu_index is not None:
        command.append(f"-graphicsadapter={settings.gpu_index}")
    return command + list(settings.extra_args)


def carla_probe(host: str, port: int, timeout_s: float) -> tuple[str, str]:
    """(server version, map name) from a real server; raises while it is not ready."""
    import carla  # here only: the supervisor itself runs where the wheel is not installed

    client = carla.Client(host, port)
    client.set_timeout(timeout_s)
    version = client.get_server_version()
    return version, client.get_world().get_map().name


# -- process groups ----------------------------------------------------------------------------


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the whole group is gone already


def _kill_group(proc: subprocess.Popen, pgid: int, grace_s: float) -> None:
    """SIGTERM to the group, up to `grace_s` for the leader, then SIGKILL to the group regardless:
    children can outlive the leader (the UE4 binary under CarlaUE4.sh) or ignore SIGTERM."""
    if proc.poll() is None:
        _signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            logger.warning("CARLA server pid %d ignored SIGTERM for %.1f s; killing its group", proc.pid, grace_s)
    _signal_group(pgid, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # a process stuck in the kernel; nothing more a signal can do
        logger.error("CARLA server pid %d did not exit after SIGKILL", proc.pid)


# -- orphans: servers whose launching process was killed -----------------------------------------
# A rollout actor killed with SIGKILL (ray.kill, the OOM killer) cannot stop the server it started,
# and the server runs in its own session, so nothing else would. Each launch leaves an owner file
# in the log directory; the next supervisor started there kills the groups whose owner is gone.


def _owner_path(log_dir: str | os.PathLike, rpc: int) -> Path:
    return Path(log_dir) / f"carla-{rpc}.owner"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _group_runs(pgid: int, marker: str) -> bool:
    """Whether a live process of group `pgid` has `marker` on its command line (so a recycled
    group id of an unrelated program is never signalled)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                return True
        except (OSError, IndexError, ValueError):
            continue
    return False


def reap_orphans(log_dir: str | os.PathLike) -> int:
    """Kill the CARLA servers launched from `log_dir` whose launching process has died; returns
    how many process groups it killed."""
    reaped = 0
    for path in Path(log_dir).glob("carla-*.owner"):
        try:
            owner = json.loads(path.read_text())
            owner_pid, pgid, marker = int(owner["owner_pid"]), int(owner["pgid"]), str(owner["marker"])
        except (OSError, ValueError, KeyError):
            continue
        if _pid_alive(owner_pid):
            continue
        if _group_runs(pgid, marker):
            logger.warning(
                "killing orphaned CARLA server group %d (%s): its launcher, pid %d, is gone", pgid, marker, owner_pid
            )
            _signal_group(pgid, signal.SIGKILL)
            reaped += 1
        path.unlink(missing_ok=True)
    return reaped


def _finalize(proc: subprocess.Popen, pgid: int) -> None:
    """At interpreter exit (a Ray actor shutting down): no orphaned UE4 processes."""
    if proc.poll() is None:
        _kill_group(proc, pgid, grace_s=1.0)


class _PortTaken(Exception):
    """The server lost its port to another process between allocation and its bind."""


# -- the supervisor ----------------------------------------------------------------------------


class CarlaServer:
    """One supervised CARLA server. `probe(host, port, timeout_s) -> (version, map)` and
    `launcher(rpc_port) -> argv` are replaceable (tests use a stand-in program); by default the
    real CarlaUE4.sh is found at construction, so a missing installation fails at once."""

    def __init__(self, settings: CarlaServerSettings, probe: Probe | None = None, launcher: Launcher | None = None):
        self.settings = settings
        self._probe = probe or carla_probe
        if launcher is None:
            executable = find_carla_executable(settings)

            def launcher(rpc: int) -> list[str]:
                return server_command(executable, settings, rpc)

        self._launcher = launcher
        self._proc: subprocess.Popen | None = None
        self._pgid: int | None = None
        self._finalizer: weakref.finalize | None = None
        self._log = None
        self._log_path: Path | None = None
        self._rpc_port: int | None = None
        self._tm_port: int | None = None
        self._launches = 0
        self._restarts = 0
        self._ready_at: float | None = None
        self.version: str | None = None
        self.map_name: str | None = None

    # -- properties

    @property
    def rpc_port(self) -> int | None:
        return self._rpc_port

    @property
    def tm_port(self) -> int | None:
        return self._tm_port

    @property
    def launches(self) -> int:
        """Processes launched so far, retries on another port included."""
        return self._launches

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def pgid(self) -> int | None:
        return self._pgid

    def last_log_lines(self, n: int = LOG_TAIL_LINES) -> list[str]:
        if self._log_path is None or not self._log_path.exists():
            return []
        with open(self._log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))  # a UE4 log grows large; the tail is what matters
            text = f.read().decode("utf-8", errors="replace")
        return text.splitlines()[-n:]

    # -- life cycle

    def start(self) -> None:
        """Launch and wait until ready; on a port lost at launch, retry on other ports."""
        if self.alive():
            return
        self.stop()  # a dead process still holds its log file and group
        if Path(self.settings.log_dir).is_dir():
            reap_orphans(self.settings.log_dir)  # they would hold GPU memory and ports
        preferred = self._rpc_port or self.settings.rpc_port  # a restart keeps its port when it can
        lost: list[int] = []
        for _ in range(self.settings.max_port_attempts):
            rpc, tm = allocate_ports("", preferred, self.settings.max_port_attempts, exclude=lost)
            try:
                self._launch_and_wait(rpc, tm)
                return
            except _PortTaken:
                logger.warning("CARLA server lost rpc port %d to another process at launch; trying another", rpc)
                lost.append(rpc)
                preferred = rpc + PORTS_PER_SERVER if self.settings.rpc_port > 0 else 0
        raise NoFreePortError(
            f"CARLA server could not bind its ports after {len(lost)} launches "
            f"(rpc ports lost: {lost}); last log lines of {self._log_path}:\n{self._tail()}"
        )

    def _launch_and_wait(self, rpc: int, tm: int) -> None:
        command = [str(part) for part in self._launcher(rpc)]
        self._launches += 1
        self._rpc_port, self._tm_port = rpc, tm
        log_dir = Path(self.settings.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log_path = log_dir / f"carla-{rpc}-{self._launches}.log"
        # Append: a port reused by a later run must not erase an earlier crash's log. Open until
        # stop(): the server writes to it for its whole life.
        self._log = open(self._log_path, "ab")  # noqa: SIM115
        self._log.write(
            f"=== launch {self._launches} at {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(command)}\n".encode()
        )
        self._log.flush()
        logger.info("starting CARLA server (rpc %d, tm %d), log %s: %s", rpc, tm, self._log_path, command)
        self._proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._pgid = self._proc.pid  # a new session: the child leads its own process group
        _owner_path(log_dir, rpc).write_text(
            json.dumps({"owner_pid": os.getpid(), "pgid": self._pgid, "marker": f"-carla-rpc-port={rpc}"})
        )
        self._finalizer = weakref.finalize(self, _finalize, self._proc, self._pgid)
        started = time.monotonic()
        try:
            self.version, self.map_name = self._wait_ready(started + self.settings.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        self._ready_at = time.monotonic()
        logger.info(
            "CARLA server ready after %.1f s: rpc %d, pid %d, version %s, map %s",
            self._ready_at - started,
            rpc,
            self._proc.pid,
            self.version,
            self.map_name,
        )

    def _wait_ready(self, deadline: float) -> tuple[str, str]:
        host, port = self.settings.host, self._rpc_port
        while not _port_accepts(host, port, timeout_s=0.5):
            self._raise_if_exited_during_startup()
            if time.monotonic() >= deadline:
                self._raise_not_ready(f"its rpc port {port} never accepted a connection")
            time.sleep(_POLL_S)
        last_error: Exception | None = None
        while True:
            self._raise_if_exited_during_startup()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._raise_not_ready(
                    f"port {port} open but the server did not answer its version and map "
                    f"(last probe error: {last_error!r})"
                )
            try:
                version, map_name = self._probe(host, port, min(remaining, _PROBE_ATTEMPT_S))
            except Exception as exc:  # noqa: BLE001 - not ready yet; the deadline decides
                last_error = exc
                logger.debug("CARLA readiness probe on port %d: %r", port, exc)
                time.sleep(_POLL_S)
                continue
            # The answer could have come from another process on our port if ours died meanwhile.
            self._raise_if_exited_during_startup()
            return version, map_name

    def _raise_if_exited_during_startup(self) -> None:
        code = self._proc.poll()
        if code is None:
            return
        tail = self._tail()
        if any(marker in tail.lower() for marker in _PORT_IN_USE_MARKERS):
            raise _PortTaken()
        raise CarlaServerError(
            f"CARLA server (rpc port {self._rpc_port}, pid {self._proc.pid}) exited with code "
            f"{code} during startup; last log lines of {self._log_path}:\n{tail}"
        )

    def _raise_not_ready(self, what: str) -> None:
        pid = self._proc.pid
        self.stop()  # before reading the log: a hung server may still be writing
        raise CarlaServerError(
            f"CARLA server (rpc port {self._rpc_port}, pid {pid}) not ready within "
            f"{self.settings.ready_timeout_s:g} s: {what}; killed its process group; "
            f"last log lines of {self._log_path}:\n{self._tail()}"
        )

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def check(self) -> None:
        """Raise `CarlaServerError` with the log's tail when the server is not running."""
        if self._proc is None:
            raise CarlaServerError("CARLA server is not running (never started, or stopped)")
        code = self._proc.poll()
        if code is not None:
            raise CarlaServerError(
                f"CARLA server (rpc port {self._rpc_port}, pid {self._proc.pid}) died with "
                f"exit code {code}; last log lines of {self._log_path}:\n{self._tail()}"
            )

    def watch_tick(self, started_monotonic: float) -> None:
        """After a tick: `CarlaTickTimeout` if it took longer than tick_timeout_s."""
        elapsed = time.monotonic() - started_monotonic
        if elapsed > self.settings.tick_timeout_s:
            raise CarlaTickTimeout(
                f"CARLA tick took {elapsed:.2f} s (limit {self.settings.tick_timeout_s:g} s) "
                f"on rpc port {self._rpc_port}; restart the server"
            )

    @contextlib.contextmanager
    def tick_guard(self) -> Iterator[float]:
        """Around one tick; yields the time-out to give the tick call itself (`world.tick(t)`),
        since a blocked RPC cannot be interrupted from here. A time-out error from the body, or a
        tick that overran, raises `CarlaTickTimeout`; a dead server raises `CarlaServerError`."""
        started = time.monotonic()
        try:
            yield self.settings.tick_timeout_s
        except CarlaServerError:
            raise
        except Exception as exc:
            self.check()  # a crash explains the failure better than the client's error
            if _looks_like_timeout(exc):
                raise CarlaTickTimeout(
                    f"CARLA tick timed out after {time.monotonic() - started:.2f} s on rpc port {self._rpc_port}: {exc}"
                ) from exc
            raise
        self.watch_tick(started)

    def stop(self) -> None:
        """Kill the whole process group (SIGTERM, grace, SIGKILL) and close the log; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            _kill_group(proc, self._pgid, self.settings.stop_grace_s)
            _owner_path(self.settings.log_dir, self._rpc_port).unlink(missing_ok=True)
            logger.info("CARLA server pid %d (rpc %s) stopped, exit code %s", proc.pid, self._rpc_port, proc.returncode)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._ready_at = None

    def restart(self, reason: str) -> None:
        logger.warning("restarting CARLA server (rpc %s, restart %d): %s", self._rpc_port, self._restarts + 1, reason)
        self._restarts += 1
        self.stop()
        self.start()

    def restart_due(self) -> bool:
        """Whether restart_every_s has passed since the server became ready (the caller releases
        its client-side state, such as the traffic manager, and then calls `restart`)."""
        every = self.settings.restart_every_s
        return every > 0 and self._ready_at is not None and time.monotonic() - self._ready_at >= every

    def maybe_periodic_restart(self) -> bool:
        """Restart when `restart_due()`; True if it did."""
        if not self.restart_due():
            return False
        self.restart(f"periodic restart after {self.settings.restart_every_s:g} s (contains CARLA's memory growth)")
        return True

    def _tail(self) -> str:
        return "\n".join(self.last_log_lines()) or "(log empty)"

    def __enter__(self) -> CarlaServer:  # noqa: PYI034 - typing.Self needs Python 3.11
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _looks_like_timeout(exc: BaseException) -> bool:
    """socket.timeout is TimeoutError; the carla client raises RuntimeError("time-out of ...ms ...")."""
    if isinstance(exc, TimeoutError):
        return True
    text = str(exc).lower()
    return "time-out" in text or "timed out" in text or "timeout" in text


# -- from the run config ------------------------------------------------------------------------


def server_settings(carla_config) -> CarlaServerSettings:
    """The supervisor's settings from the run config's env.carla (configs.schema.CarlaConfig)."""
    c = carla_config
    return CarlaServerSettings(
        carla_root=c.carla_root,
        executable=c.executable,
        host=c.host,
        rpc_port=c.port,
        gpu_index=c.gpu_index,
        nullrhi=c.nullrhi,
        quality_level=c.quality_level,
        ready_timeout_s=c.ready_timeout_s,
        tick_timeout_s=c.tick_timeout_s,
        restart_every_s=c.restart_every_s,
        log_dir=c.log_dir,
    )


def launch_for(env_config) -> CarlaServer | None:
    """Start this process's CARLA server when the run config asks for one (env.backend carla with
    env.carla.launch), else None. Raises CarlaNotFoundError or CarlaServerError with the searched
    paths or the server's last log lines, which fails the rollout actor that called it."""
    if env_config.backend != "carla" or not env_config.carla.launch:
        return None
    server = CarlaServer(server_settings(env_config.carla))
    server.start()
    return server
