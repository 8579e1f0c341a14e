"""The learner's speed-ups change no value: k updates with foreach Adam, foreach target updates and the
kept-memory allocator give exactly the losses and weights of the straightforward path (one Adam kernel
and one lerp_ per tensor), on the same batches. Speed itself: benchmarks/learner_throughput.py."""
import platform

import numpy as np
import pytest
import torch

import learners.actor_critic.agent as agent_module
from configs.loader import CONFIG_DIR, load_config
from learners.learner import Learner, keep_freed_memory
from learners.replay import empty_chunk

UPDATES = 3


def config(algorithm: str):
    return load_config([CONFIG_DIR / "quickstart.yaml", CONFIG_DIR / "debug.yaml"],
                       [f"agent.algorithm={algorithm}", "learner.learning_starts=0", "learner.batch_size=8",
                        "learner.publish_every_updates=2", "learner.device=cpu", "agent.guidance.vmr_weight=0.1"])


def rows(n: int) -> dict:
    rng = np.random.default_rng(0)
    chunk = empty_chunk(n)
    chunk["bev"][:] = (rng.random((n, 15, 96, 96)) < 0.1).astype(np.uint8) * 255
    chunk["state"][:] = rng.uniform(-1, 1, chunk["state"].shape)
    chunk["action"][:] = rng.uniform(-1, 1, (n, 2))
    chunk["reward"][:] = rng.standard_normal(n)
    chunk["step"][:] = np.arange(n)
    chunk["is_first"][0] = True
    chunk["vlm_action"][:] = rng.uniform(-1, 1, (n, 2))
    chunk["vlm_action_mask"][: n // 2] = 1.0  # guidance on half the rows: VMR and AWAG both run
    return chunk


def reference_soft_update(target, online, tau):
    with torch.no_grad():
        for target_param, param in zip(target.parameters(), online.parameters()):
            target_param.lerp_(param, tau)


def straightforward(learner: Learner) -> Learner:
    """The same learner stepping one Adam kernel per tensor (torch's CPU default)."""
    agent = learner.agent
    for name, opt in agent.optimizers().items():
        params = [p for group in opt.param_groups for p in group["params"]]
        setattr(agent, name, torch.optim.Adam(params, lr=opt.param_groups[0]["lr"], foreach=False))
    return learner


def run(learner: Learner) -> list[dict[str, float]]:
    learner.add(rows(64))
    return [learner.update() for _ in range(UPDATES)]


@pytest.mark.parametrize("algorithm", ["drqv2", "sac", "td3bc"])
def test_fast_updates_equal_the_straightforward_ones(tmp_path, monkeypatch, algorithm):
    fast = Learner(config(algorithm), tmp_path / "fast")
    fast_metrics = run(fast)
    monkeypatch.setattr(agent_module, "soft_update", reference_soft_update)
    monkeypatch.setattr("learners.actor_critic.td3.soft_update", reference_soft_update)
    plain = straightforward(Learner(config(algorithm), tmp_path / "plain"))
    plain_metrics = run(plain)
    assert fast_metrics == plain_metrics  # the same batches gave the same losses, update by update
    for name, module in fast.agent.modules().items():
        for (key, value), other in zip(module.state_dict().items(), plain.agent.modules()[name].state_dict().values()):
            assert torch.equal(value, other), f"{name}.{key} differs after {UPDATES} updates"
    assert fast.replay.rng_state() == plain.replay.rng_state()
    assert fast.version == plain.version == UPDATES // 2


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_allocator_setting_applies_on_glibc():
    assert keep_freed_memory() is True
