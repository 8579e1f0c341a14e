"""The two factories for the learning roles: `make_agent` (the learner's side) and `make_policy`
(acting only, what workers and the evaluator hold). The algorithms are the sections of
configs.schema.AgentConfig; each names the module that implements it, which provides
`make_agent(config, device, seed)` and `make_policy(config, seed)`."""

from __future__ import annotations

import importlib

from configs.schema import AgentConfig, algorithm_names
from core import Agent, Policy


def _implementation(config: AgentConfig):
    if config.algorithm not in algorithm_names():
        raise ValueError(
            f"agent.algorithm = {config.algorithm!r} has no implementation; "
            f"choose one of {', '.join(algorithm_names())}"
        )
    return importlib.import_module(config.params.implementation)


def make_agent(config: AgentConfig, device: str = "cpu", seed: int = 0) -> Agent:
    return _implementation(config).make_agent(config, device, seed)


def make_policy(config: AgentConfig, seed: int = 0) -> Policy:
    return _implementation(config).make_policy(config, seed)
