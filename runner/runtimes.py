"""`make_runtime`: the one place that builds a runtime, by `run.mode`. Adding a mode adds its
runtime's file and a line here."""

from __future__ import annotations

import importlib
from pathlib import Path

from configs.schema import Config
from core import Runtime

# run.mode -> the factory "module:callable" taking (config, run directory); imported only when
# chosen, so local mode never imports ray.
RUNTIMES = {
    "local": "actors.local_runtime:LocalRuntime",
    "ray": "cluster.launch:launch",
    "offline": "actors.offline_runtime:OfflineRuntime",
}


def make_runtime(config: Config, run_dir: Path) -> Runtime:
    """The runtime of `run.mode`; `run_dir` names the run and holds its replay journal."""
    module, name = RUNTIMES[config.run.mode].split(":")
    return getattr(importlib.import_module(module), name)(config, run_dir)
