"""The `env` section: the driving environment and its CARLA backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from configs.schema.fields import num, section

TRAFFIC_PRESETS = ("empty", "regular", "dense")


# ------------------------------------------------------------------------------------------ environment


@dataclass(frozen=True)
class CarlaConfig:
    """The CARLA backend (env.backend: carla): a server per rollout actor, or one already running."""

    launch: bool = True  # each rollout actor starts and supervises its own server (envs/carla/server.py)
    host: str = "127.0.0.1"
    port: int = num(2000, 0, 65535, unit="port")  # rpc port; with launch, the preferred one (0: any free)
    tm_port: int = num(8000, 1, 65535, unit="port")  # traffic manager port of a running server (launched: rpc+6000)
    carla_root: str | None = None  # directory of CarlaUE4.sh; None: $CARLA_ROOT, then the usual places
    executable: str | None = None  # the server script itself; wins over carla_root
    gpu_index: int | None = num(None, 0, unit="GPU index")  # Vulkan adapter (-graphicsadapter); None: default
    nullrhi: bool = True  # no rendering at all: the BEV needs none (set false for camera sensors)
    quality_level: Literal["Low", "Epic"] = "Low"
    ready_timeout_s: float = num(120.0, 0, unit="s", low_open=True)  # launch until the server answers
    tick_timeout_s: float = num(20.0, 0, unit="s", low_open=True)  # a tick longer than this: server lost
    restart_every_s: float = num(0.0, 0, unit="s")  # periodic restarts against memory growth (0: never)
    client_timeout_s: float = num(20.0, 0, unit="s", low_open=True)
    log_dir: str = "runs/carla-logs"


@dataclass(frozen=True)
class EnvConfig:
    town: str | None = None  # None: Town01 where its map is found, else the generated town
    traffic: Literal["empty", "regular", "dense"] = "regular"
    route_suite: str | None = None  # None: the town's own suite
    maps_dir: str | None = None  # None: $MENTOR_MAPS_DIR, $CARLA_ROOT, then the generated town
    backend: Literal["sumo", "carla"] = "sumo"  # the embedded SUMO simulator, or CARLA servers
    carla: CarlaConfig = section(CarlaConfig)
