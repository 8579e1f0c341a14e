"""The Agent and Policy contracts (core.py), for every algorithm the registry knows
(configs.schema.algorithm_names(), not a hand-written list): a new algorithm is tested the moment it
is registered. Each is built by the factory, samples a batch of its own kind from a real replay,
updates on it, saves, reloads to the same numbers, and publishes weights that a Policy loads and acts
with."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from configs.schema import AgentConfig, algorithm_names
from core import Agent, Policy
from envs.synthetic_bev import synthetic_bevs
from learners.registry import make_agent, make_policy
from learners.replay import ReplayBuffer, empty_chunk

BATCH = 4


def agent_config(algorithm: str) -> AgentConfig:
    config = AgentConfig(algorithm=algorithm, network="small")
    if dataclasses.is_dataclass(config.params) and hasattr(config.params, "sequence_length"):
        config = dataclasses.replace(config, **{algorithm: dataclasses.replace(config.params, sequence_length=8)})
    return config


@pytest.fixture(scope="module")
def replay() -> ReplayBuffer:
    """Two episodes of 60 rows with every feedback field answered on half the rows."""
    rng = np.random.default_rng(0)
    rows = 120
    chunk = empty_chunk(rows)
    chunk["bev"][:] = synthetic_bevs(rng, rows)
    chunk["state"][:] = rng.uniform(-1, 1, chunk["state"].shape)
    chunk["action"][:] = rng.uniform(-1, 1, chunk["action"].shape)
    chunk["reward"][:] = rng.uniform(0, 1, rows)
    chunk["cost"][:] = rng.random(rows) < 0.1
    chunk["step"][:] = np.arange(rows)
    position = np.arange(rows) % 60
    chunk["is_first"][:] = position == 0
    chunk["is_last"][:] = position == 59
    chunk["terminated"][:] = position == 58
    chunk["episode_id"][:] = np.arange(rows) // 60
    answered = (np.arange(rows) % 2 == 0) & ~chunk["is_last"]
    for name, shape in (("clip_margin", ()), ("safety", ()), ("vlm_action", (2,)), ("expert_action", (2,))):
        chunk[name][:] = rng.uniform(0 if not shape else -1, 1, (rows, *shape)) * answered.reshape(
            -1, *[1] * len(shape)
        )
        chunk[f"{name}_mask"][:] = answered
    buffer = ReplayBuffer(1000, seed=0)
    buffer.add(chunk)
    return buffer


def observation(n: int) -> dict:
    rng = np.random.default_rng(5)
    return {"bev": synthetic_bevs(rng, n), "state": rng.uniform(-1, 1, (n, 10)).astype(np.float32)}


def test_the_registry_names_every_algorithm_once():
    names = algorithm_names()
    assert len(names) == len(set(names)) and {"drqv2", "sac", "td3", "bc", "td3bc", "iql", "vlsafe"} <= set(names)


@pytest.mark.parametrize("algorithm", algorithm_names())
def test_every_algorithm_keeps_the_agent_and_policy_contracts(algorithm, replay, tmp_path):
    config = agent_config(algorithm)
    agent = make_agent(config, seed=0)
    assert isinstance(agent, Agent)
    assert agent.name == algorithm and isinstance(agent.architecture, str) and agent.architecture
    assert isinstance(agent.required_labels, tuple)
    assert agent.modules() and all(isinstance(m, torch.nn.Module) for m in agent.modules().values())

    assert agent.batch.can_sample(replay, BATCH)
    batch, _ = agent.batch.sample(replay, BATCH)
    metrics = agent.update(batch, step=1000)
    assert metrics and all(isinstance(v, float) and math.isfinite(v) for v in metrics.values()), metrics

    torch.save(agent.state_dict(), tmp_path / "agent.pt")
    restored = make_agent(config, seed=7)
    restored.load_state_dict(torch.load(tmp_path / "agent.pt", weights_only=True))
    following, _ = agent.batch.sample(replay, BATCH)
    # The same process and kernels on both sides: equal bit for bit on every CPU (docs/architecture.md §10).
    assert restored.update(following, step=1001) == agent.update(following, step=1001)

    policy = make_policy(config, seed=3)
    assert isinstance(policy, Policy)
    policy.load_weights(agent.policy_weights())
    n = 3
    carry = policy.initial_carry(n)
    for explore in (False, True):
        carry, action = policy.act(carry, observation(n), np.ones(n, bool), explore=explore, step=1000)
        assert action.shape == (n, 2) and action.dtype == np.float32 and np.all(np.abs(action) <= 1.0)
