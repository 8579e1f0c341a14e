"""`make_runtime`: the one place that builds a runtime: the skeleton (runtimes/skeleton.py) with a
mode and a transport. Adding a mode adds its file and a line in MODES; adding a transport, its file
and a line in TRANSPORTS."""

from __future__ import annotations

import importlib
from pathlib import Path

from configs.schema import Config
from runtimes.contracts import Mode
from runtimes.skeleton import Runtime

# Where experience comes from and where it goes: the module attribute holding the mode. Imported
# only when chosen.
MODES = {
    "online": "runtimes.online:MODE",
    "offline": "runtimes.offline:MODE",
    "collection": "runtimes.collection:MODE",
}
# How the roles are reached: a factory taking (config, mode, run directory). Imported only when
# chosen, so local runs never import ray.
TRANSPORTS = {
    "local": "runtimes.local:LocalTransport",
    "ray": "cluster.launch:launch",
}


def _load(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def load_mode(name: str) -> Mode:
    return _load(MODES[name])


def mode_name(config: Config, collecting: bool = False) -> str:
    """train.py runs online, or offline when run.mode is offline; collect.py collects."""
    if collecting:
        return "collection"
    return "offline" if config.run.mode == "offline" else "online"


def transport_name(config: Config) -> str:
    """run.mode ray: a Ray cluster; local and offline: this process."""
    return "ray" if config.run.mode == "ray" else "local"


def make_runtime(
    config: Config,
    run_dir: Path,
    mode: str | None = None,
    transport: str | None = None,
    first_stream: int = 0,
    env_steps: int = 0,
) -> Runtime:
    """The runtime of `mode` (default: mode_name(config)) on `transport` (default: run.mode's);
    `run_dir` names the run and holds its replay journal. `first_stream` and `env_steps`: where a
    collection into a directory that already holds shards starts."""
    chosen = load_mode(mode or mode_name(config))
    transport = _load(TRANSPORTS[transport or transport_name(config)])(config, chosen, Path(run_dir))
    return Runtime(config, chosen, transport, first_stream=first_stream, env_steps=env_steps)
