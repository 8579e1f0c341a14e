"""VL-SAFE's agent and policy behind the Agent/Policy contracts, on a tiny replay (the debug preset)."""

import dataclasses

import numpy as np
import pytest
import torch

from configs.schema import AgentConfig, VlSafeConfig
from core import Agent, Policy
from learners.registry import make_agent, make_policy
from learners.replay import ReplayBuffer, empty_chunk
from learners.world_model.agent import downsample_masks


def config(**params) -> AgentConfig:
    return AgentConfig(algorithm="vlsafe", vlsafe=VlSafeConfig(sequence_length=6, horizon=3, **params))


def episodes(n_episodes=3, length=20, seed=0, labelled=True):
    rng = np.random.default_rng(seed)
    n = n_episodes * length
    c = empty_chunk(n)
    c["step"][:] = np.arange(n)
    c["episode_id"][:] = np.arange(n) // length
    c["is_first"][::length] = True
    c["is_last"][length - 1 :: length] = True
    c["truncated"][length - 2 :: length] = c["truncated"][length - 1 :: length] = True
    c["bev"][:] = (rng.random(c["bev"].shape) < 0.1).astype(np.uint8) * 255
    c["state"][:] = rng.normal(size=c["state"].shape)
    c["action"][:] = rng.uniform(-1, 1, (n, 2))
    c["reward"][:] = rng.normal(size=n)
    c["cost"][:] = rng.random(n) < 0.1
    c["safety"][:] = rng.random(n)
    c["safety_mask"][:] = 1.0 if labelled else 0.0
    c["reward"][c["is_last"]] = c["cost"][c["is_last"]] = c["safety_mask"][c["is_last"]] = 0
    return c


@pytest.fixture(scope="module")
def replay():
    buffer = ReplayBuffer(500)
    buffer.add(episodes())
    return buffer


def test_agent_and_policy_satisfy_the_contracts_and_update(replay):
    agent = make_agent(config())
    assert isinstance(agent, Agent) and isinstance(make_policy(config()), Policy)
    batch, _ = agent.batch.sample(replay, 2)
    assert batch["bev"].shape == (2, 6, 15, 96, 96)
    before = {k: v.clone() for k, v in agent.model.state_dict().items()}
    metrics = agent.update(batch, step=0)
    assert all(np.isfinite(v) for v in metrics.values())
    for key in (
        "model/image",
        "model/reward",
        "model/cost",
        "model/continue",
        "model/safety",
        "model/kl",
        "reward_critic/loss",
        "cost_critic/loss",
        "actor/imagined_loss",
        "actor/replayed_loss",
    ):
        assert key in metrics
    assert any(not torch.equal(before[k], v) for k, v in agent.model.state_dict().items())
    assert agent.required_labels == ("safety",)


def test_unlabelled_rows_give_the_safety_head_no_gradient():
    agent = make_agent(config())
    buffer = ReplayBuffer(500)
    buffer.add(episodes(labelled=False))
    batch, _ = agent.batch.sample(buffer, 2)
    batch["safety"][:] = np.nan  # whatever unlabelled rows hold never reaches a loss
    b = agent._to_tensors(batch)
    post = agent.model.observe(b["bev"], b["state"], b["prev_action"], b["is_first"])
    losses, _ = agent._model_losses(agent.model.features(post["h"], post["z"]), post, b)
    assert losses["safety"].item() == 0.0
    losses["safety"].backward()
    assert all(p.grad is None or not p.grad.any() for p in agent.model.safety_head.parameters())


def test_policy_carries_its_state_and_resets_it_at_episode_starts(replay):
    cfg = config()
    agent, policy = make_agent(cfg), make_policy(cfg)
    policy.load_weights(agent.policy_weights())
    rows = episodes(1, 4)
    obs = [{"bev": rows["bev"][i : i + 1], "state": rows["state"][i : i + 1]} for i in range(3)]
    carry = policy.initial_carry(1)
    carry, first = policy.act(carry, obs[0], np.array([True]), explore=False, step=0)
    carry, _ = policy.act(carry, obs[1], np.array([False]), explore=False, step=0)
    assert carry[0].abs().sum() > 0  # the state moved on
    _, again = policy.act(carry, obs[0], np.array([True]), explore=False, step=0)
    np.testing.assert_allclose(again, first, atol=1e-6)  # is_first forgets everything before it
    assert np.all(np.abs(first) <= 1)


def test_weights_are_none_or_lagrangian_by_config(replay):
    for weighting in ("none", "lagrangian"):
        agent = make_agent(config(safety_weighting=weighting))
        assert agent.required_labels == ()
        batch, _ = agent.batch.sample(replay, 2)
        metrics = agent.update(batch, step=0)
        assert all(np.isfinite(v) for v in metrics.values())
        assert ("lagrange/multiplier" in metrics) == (weighting == "lagrangian")


def test_a_non_finite_loss_stops_the_update_before_any_step(replay):
    agent = make_agent(config())
    batch, _ = agent.batch.sample(replay, 2)
    batch["reward"][:, :] = np.nan
    before = {k: v.clone() for k, v in agent.model.state_dict().items()}
    metrics = agent.update(batch, step=0)
    assert set(metrics) == {"nonfinite/reward"} and np.isnan(metrics["nonfinite/reward"])
    assert all(torch.equal(before[k], v) for k, v in agent.model.state_dict().items())
    assert agent.update_count == 0


def test_state_dict_round_trip_and_another_preset_is_refused(replay):
    agent = make_agent(config())
    batch, _ = agent.batch.sample(replay, 2)
    agent.update(batch, step=0)
    twin = make_agent(config())
    twin.load_state_dict(agent.state_dict())
    assert twin.update_count == 1 and twin.reward_scale == agent.reward_scale
    np.testing.assert_allclose(twin.update(batch, 0)["model/image"], agent.update(batch, 0)["model/image"], rtol=1e-5)
    gpu_state = agent.state_dict() | {"rng": torch.zeros(16, dtype=torch.uint8)}  # a CUDA generator's state
    make_agent(config()).load_state_dict(gpu_state)  # a GPU run's checkpoint loads on a CPU
    other = make_agent(config(preset="S"))
    with pytest.raises(ValueError, match="preset 'debug' cannot load into preset 'S'"):
        other.load_state_dict(agent.state_dict())


def test_downsampled_masks_are_the_2x_max_pool():
    bev = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    expected = torch.nn.functional.max_pool2d(bev.float(), 2).to(torch.uint8)
    assert torch.equal(downsample_masks(bev, 4), expected)
    assert downsample_masks(bev, 8) is bev
    with pytest.raises(ValueError, match="neither"):
        downsample_masks(bev, 3)


def test_sizes_grow_with_the_preset():
    counts = [make_agent(config(preset=p)).parameter_count() for p in ("debug", "S")]
    assert counts[0] < counts[1]
    assert dataclasses.replace(config().vlsafe).preset == "debug"
