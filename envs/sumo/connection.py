"""Where a SUMO simulation runs: libsumo in this process, or a SUMO server over TraCI.

libsumo holds one simulation per process (a second `libsumo.start` silently replaces the first).
So the first simulation of a process takes libsumo (the fastest: no socket, no copy), and every
further one starts its own `sumo` server as a child process and talks to it over TraCI. Both expose
the same domains (`vehicle`, `simulation`, `trafficlight`, ...), so `SumoSimulation` and
`TownNetwork` use either through `SumoConnection.api` without knowing which. This is what lets
gymnasium's `check_env(gym.make(...))`, `make_vec(..., "sync")`, SB3's `DummyVecEnv` and RLlib env
runners with several envs hold many Mentor environments in one process. The cost per extra
environment is measured by benchmarks/env_steps.py (docs/results.md).

TraCI connections are made here without traci's global connection pool (no labels, no `switch`),
so nothing process-wide changes but the libsumo slot.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import subprocess
import tempfile
import threading
import time
from typing import Literal

logger = logging.getLogger(__name__)

Transport = Literal["auto", "libsumo", "traci"]
TRANSPORTS = ("auto", "libsumo", "traci")
_CONNECT_TIMEOUT_S = 30.0  # a big town's net takes about a second to load
_PORT_ATTEMPTS = 3  # another process may take the free port before the server binds it

# Which simulation owns this process's libsumo.
_libsumo_owner: dict[str, str] = {}
_libsumo_lock = threading.Lock()


class SimulationInUseError(RuntimeError):
    """libsumo was asked for in a process where another simulation already holds it."""


def _import_libsumo():
    """Import libsumo, keeping its import-time pyarrow ABI notice off stdout (benchmarks print JSON
    there). The notice is harmless for Mentor: SUMO runs with Parquet I/O in one process (docs/architecture.md §9)."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        import libsumo
    if captured.getvalue().strip():
        logger.debug("libsumo at import: %s", captured.getvalue().strip())
    return libsumo


def sumo_binary() -> str:
    from envs.sumo.netbuild import sumo_home

    return str(sumo_home() / "bin" / "sumo")


class SumoConnection:
    """One simulation's handle: `api` has the TraCI domains; `errors` are what a failing command or a
    dead server raises; `start`, `load` and `close` manage the simulation."""

    transport: str
    api: object
    constants: object
    errors: tuple[type[BaseException], ...]

    def start(self, args: list[str]) -> None:
        raise NotImplementedError

    def load(self, args: list[str]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class LibsumoConnection(SumoConnection):
    """This process's libsumo: claimed at construction, released at `release()`."""

    transport = "libsumo"

    def __init__(self, owner: str):
        with _libsumo_lock:
            holder = _libsumo_owner.get("libsumo")
            if holder is not None:
                raise SimulationInUseError(
                    f"process {os.getpid()} already runs a simulation in libsumo ({holder}); libsumo allows one "
                    "per process. Use transport 'auto' or 'traci' for the others (a SUMO server each), or close "
                    "the first (env.close())."
                )
            _libsumo_owner["libsumo"] = owner
        self._owner = owner
        self.api = _import_libsumo()
        self.constants = self.api.constants
        self.errors = (self.api.TraCIException,)

    def start(self, args: list[str]) -> None:
        self.api.start(args)

    def load(self, args: list[str]) -> None:
        self.api.simulation.load(args[1:])

    def close(self) -> None:
        self.api.close()

    server_pid = None  # no server: the simulation runs in this process

    def release(self) -> None:
        with _libsumo_lock:
            if _libsumo_owner.get("libsumo") == self._owner:
                del _libsumo_owner["libsumo"]


class TraciConnection(SumoConnection):
    """A `sumo` server in a child process, over a TraCI socket (traci.connection.Connection, unpooled)."""

    transport = "traci"

    def __init__(self):
        import traci
        from traci import constants

        self._traci = traci
        self.constants = constants
        self.errors = (traci.TraCIException, traci.FatalTraCIError)
        self.api = None
        self._process: subprocess.Popen | None = None
        self._errors_file = None

    def start(self, args: list[str]) -> None:
        self.close()
        command = [sumo_binary(), *args[1:]]
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = _free_port()
            self._errors_file = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would stall SUMO
            self._process = subprocess.Popen(
                [*command, "--remote-port", str(port)], stdout=subprocess.DEVNULL, stderr=self._errors_file
            )
            self.api = self._connect(port)
            if self.api is not None:
                return
            logger.debug("SUMO server on port %d did not come up (attempt %d)", port, attempt)
        self._kill()
        raise self._traci.FatalTraCIError(
            f"no SUMO server came up for {' '.join(command)!r} in {_PORT_ATTEMPTS} attempts; last said: "
            f"{self._stderr()!r}"
        )

    def _connect(self, port: int):
        deadline = time.monotonic() + _CONNECT_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return None  # the server exited (port taken, bad arguments): the caller retries
            try:
                return self._traci.connection.Connection("localhost", port, self._process, None, True, None)
            except OSError:
                time.sleep(0.02)
        self._kill()
        return None

    def load(self, args: list[str]) -> None:
        self.api.load(args[1:])

    @property
    def server_pid(self) -> int | None:
        """The SUMO server's process id while it runs."""
        return None if self._process is None else self._process.pid

    def close(self) -> None:
        if self.api is not None:
            try:
                self.api.close()
            except (*self.errors, OSError):  # a dead server cannot say goodbye
                logger.debug("TraCI close failed", exc_info=True)
            self.api = None
        self._kill()

    def release(self) -> None:
        self.close()

    def _kill(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None

    def _stderr(self) -> str:
        """The end of what the last server wrote to stderr."""
        if self._errors_file is None:
            return ""
        self._errors_file.seek(0)
        return self._errors_file.read().decode(errors="replace").strip()[-500:]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def open_connection(owner: str, transport: Transport = "auto") -> SumoConnection:
    """libsumo when `transport` says so, or when 'auto' and this process's libsumo is free; else TraCI."""
    if transport not in TRANSPORTS:
        raise ValueError(f"SUMO transport {transport!r} is not known; use one of {TRANSPORTS}")
    if transport == "traci":
        return TraciConnection()
    try:
        return LibsumoConnection(owner)
    except SimulationInUseError:
        if transport == "libsumo":
            raise
        return TraciConnection()
