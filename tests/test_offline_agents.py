"""BC, TD3+BC and IQL on the actor-critic skeleton: contracts, finite updates that learn the
imitation target, exact checkpoint round trips, and warm starts of online agents from them."""

import math

import numpy as np
import pytest
import torch

from configs.schema import AgentConfig
from core import Agent, Policy
from learners.registry import make_agent, make_policy
from learners.warm_start import agent_file, warm_start
from tests.test_agent import act, random_batch

OFFLINE = ("bc", "td3bc", "iql")


def config(algorithm: str) -> AgentConfig:
    return AgentConfig(algorithm=algorithm, network="small")


def labelled_batch(seed: int = 0, n: int = 8) -> dict[str, np.ndarray]:
    batch = random_batch(n, seed)
    batch["expert_action"] = np.tile(np.array([[0.5, -0.25]], np.float32), (n, 1))
    batch["expert_action_mask"] = np.ones(n, np.float32)
    return batch


@pytest.mark.parametrize("algorithm", OFFLINE)
def test_offline_factories_build_the_contracts(algorithm):
    assert isinstance(make_agent(config(algorithm)), Agent) and isinstance(make_policy(config(algorithm)), Policy)


@pytest.mark.parametrize("algorithm", OFFLINE)
def test_offline_update_is_finite(algorithm):
    metrics = {}
    agent = make_agent(config(algorithm))
    for i in range(2):  # td3bc steps its actor every other update
        metrics |= agent.update(labelled_batch(seed=i), step=0)
    expected = {
        "bc": {"bc_loss"},
        "td3bc": {"critic_loss", "actor_loss", "bc_loss", "td3bc_lambda"},
        "iql": {"critic_loss", "value_loss", "actor_loss", "awr_weight_mean"},
    }[algorithm]
    assert expected <= set(metrics)
    assert all(math.isfinite(value) for value in metrics.values()), metrics


def test_bc_learns_the_expert_label_not_the_executed_action():
    agent = make_agent(AgentConfig(algorithm="bc", network="small", lr=1e-3, augment_pad=0))
    batch = labelled_batch(seed=0, n=16)
    first = agent.update(batch, step=0)["bc_loss"]
    for _ in range(60):
        last = agent.update(batch, step=0)["bc_loss"]
    assert last < 0.1 * first
    policy = make_policy(config("bc"))
    policy.load_weights(agent.policy_weights())
    action = act(policy, {"bev": batch["bev"], "state": batch["state"]}, explore=False)
    assert np.allclose(action, [0.5, -0.25], atol=0.15)


@pytest.mark.parametrize("algorithm", OFFLINE)
def test_offline_state_dict_round_trip(algorithm):
    original = make_agent(config(algorithm), seed=0)
    original.update(labelled_batch(seed=0), step=0)
    restored = make_agent(config(algorithm), seed=5)
    restored.load_state_dict(original.state_dict())
    batch = labelled_batch(seed=1)
    assert restored.update(batch, step=1) == original.update(batch, step=1)


@pytest.mark.parametrize("online", ("drqv2", "td3"))
@pytest.mark.parametrize("offline", OFFLINE)
def test_online_agent_warm_starts_from_an_offline_checkpoint(offline, online, tmp_path):
    pretrained = make_agent(config(offline), seed=0)
    pretrained.update(labelled_batch(), step=0)
    torch.save(pretrained.state_dict(), tmp_path / "agent.pt")
    agent = make_agent(config(online), seed=9)
    loaded = warm_start(agent, tmp_path)
    assert {"encoder", "actor", "critic", "critic_target"} <= set(loaded)
    assert all(torch.equal(a, b) for a, b in zip(agent.policy_weights().values(), pretrained.policy_weights().values()))
    if online == "td3" and "actor_target" not in pretrained.modules():  # starts as the loaded actor
        assert all(torch.equal(a, b) for a, b in zip(agent.actor_target.parameters(), agent.actor.parameters()))
    assert math.isfinite(agent.update(labelled_batch(seed=2), step=0)["critic_loss"])


def test_warm_start_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="agent.init_from"):
        agent_file(tmp_path)
    torch.save(make_agent(AgentConfig(algorithm="bc", network="foundrl")).state_dict(), tmp_path / "agent.pt")
    with pytest.raises(ValueError, match="agent.network"):
        warm_start(make_agent(config("drqv2")), tmp_path)
