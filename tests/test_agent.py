"""The Agent on the small preset: acting, one update per algorithm, exact checkpoint round trips."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from configs.schema import AgentConfig, GuidanceConfig
from learners.agent import Agent

ALGORITHMS = ("drqv2", "sac", "td3")
GUIDED = GuidanceConfig(vmr_weight=1.0, awag_weight=1.0)


def config(algorithm: str, guided: bool = True) -> AgentConfig:
    return AgentConfig(algorithm=algorithm, network="small", guidance=GUIDED if guided else GuidanceConfig())


def observations(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    bev = (rng.random((n, 15, 96, 96)) < 0.2).astype(np.uint8) * 255
    return bev, rng.standard_normal((n, 10)).astype(np.float32)


def random_batch(n: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    bev, state = observations(n, seed)
    next_bev, next_state = observations(n, seed + 100)
    vlm_mask = (np.arange(n) % 2 == 0).astype(np.float32)  # half the rows advised

    def uniform(*shape: int) -> np.ndarray:
        return rng.uniform(-1, 1, shape).astype(np.float32)

    return {"bev": bev, "state": state, "next_bev": next_bev, "next_state": next_state,
            "action": uniform(n, 2), "reward": uniform(n), "discount": np.full(n, 0.97, np.float32),
            "cost": np.zeros(n, np.float32), "clip_margin": np.zeros(n, np.float32),
            "clip_margin_mask": np.zeros(n, np.float32), "safety": np.zeros(n, np.float32),
            "safety_mask": np.zeros(n, np.float32), "vlm_action": uniform(n, 2) * vlm_mask[:, None],
            "vlm_action_mask": vlm_mask, "policy_version": np.zeros(n, np.int64)}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_act_shapes_and_bounds(algorithm):
    agent = Agent(config(algorithm))
    bev, state = observations(4, seed=1)
    for explore in (True, False):
        action = agent.act(bev, state, step=0, explore=explore)
        assert action.shape == (4, 2) and action.dtype == np.float32
        assert np.all(np.abs(action) <= 1.0)
    deterministic = agent.act(bev, state, step=0, explore=False)
    assert np.array_equal(deterministic, agent.act(bev, state, step=0, explore=False))


@pytest.mark.parametrize("guided", (False, True))
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_update_returns_finite_metrics(algorithm, guided):
    agent = Agent(config(algorithm, guided))
    metrics = agent.update(random_batch(), step=1000)
    expected = {"critic_loss", "actor_loss", "q_mean", "vlm_available"}
    expected |= {"vmr_loss", "awag_loss", "vmr_lambda", "awag_iota"} if guided else set()
    expected |= {"alpha"} if algorithm == "sac" else set()
    assert expected <= set(metrics)
    assert all(math.isfinite(value) for value in metrics.values()), metrics
    assert metrics["vlm_available"] == pytest.approx(0.5)


def test_td3_delays_the_actor():
    agent = Agent(config("td3"))
    batch = random_batch()
    assert "actor_loss" in agent.update(batch, step=0)
    assert "actor_loss" not in agent.update(batch, step=1)  # policy_delay 2


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_state_dict_round_trip_resumes_exactly(algorithm):
    cfg = config(algorithm)
    first, second = random_batch(seed=0), random_batch(seed=1)
    original = Agent(cfg, seed=0)
    original.update(first, step=10)
    snapshot = original.state_dict()
    restored = Agent(cfg, seed=7)
    restored.load_state_dict(snapshot)
    bev, state = observations(3, seed=2)
    for explore in (True, False):
        assert np.array_equal(original.act(bev, state, 10, explore), restored.act(bev, state, 10, explore))
    expected = original.update(second, step=11)
    assert restored.update(second, step=11) == expected
    # The snapshot is a copy: updating the original afterwards did not change it.
    late = Agent(cfg, seed=3)
    late.load_state_dict(snapshot)
    late.act(bev, state, 10, True), late.act(bev, state, 10, False)  # consume the act stream the same way
    assert late.update(second, step=11) == expected


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_policy_state_loads_into_fresh_agent(algorithm):
    trained = Agent(config(algorithm), seed=0)
    trained.update(random_batch(), step=0)
    policy = trained.policy_state()
    assert all(k.startswith(("encoder.", "actor.")) and v.device.type == "cpu" for k, v in policy.items())
    fresh = Agent(config(algorithm), seed=1)
    fresh.load_policy_state(policy)
    bev, state = observations(5, seed=3)
    assert np.array_equal(trained.act(bev, state, 0, explore=False), fresh.act(bev, state, 0, explore=False))


def test_checkpoint_for_another_algorithm_is_refused():
    with pytest.raises(ValueError, match="drqv2/small"):
        Agent(config("sac")).load_state_dict(Agent(config("drqv2")).state_dict())


def test_same_seed_same_initialisation_without_touching_global_rng():
    before = torch.random.get_rng_state()
    a, b = Agent(config("drqv2"), seed=4), Agent(config("drqv2"), seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a.policy_state().values(), b.policy_state().values()))


def test_foundrl_parameter_count():
    count = Agent(dataclasses.replace(config("drqv2"), network="foundrl")).parameter_count()
    assert 2_000_000 <= count <= 6_000_000, count  # 3,837,584 here; Found-RL's model: 3.82M
