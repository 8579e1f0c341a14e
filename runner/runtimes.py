"""`make_runtime`: the one place that builds a runtime, by `run.mode`. Adding a mode adds its
runtime's file and a line here."""
from __future__ import annotations

import importlib

from configs.schema import Config
from core import Runtime

# run.mode -> the factory "module:callable" taking (config, run_id); imported only when chosen,
# so local mode never imports ray.
RUNTIMES = {
    "local": "actors.local_runtime:LocalRuntime",
    "ray": "cluster.launch:launch",
}


def make_runtime(config: Config, run_id: str | None = None) -> Runtime:
    module, name = RUNTIMES[config.run.mode].split(":")
    return getattr(importlib.import_module(module), name)(config, run_id)
