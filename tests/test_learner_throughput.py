"""The learner's speed-ups change no value: k updates with foreach Adam, foreach target updates and the
kept-memory allocator give exactly the losses and weights of the straightforward path (one Adam kernel
and one lerp_ per tensor), on the same batches. Speed itself: benchmarks/learner_throughput.py, whose
parts are checked here: the learner's phase timers and the bare loop it compares against."""

import platform
import time

import numpy as np
import pytest
import torch

import learners.actor_critic.agent as agent_module
from benchmarks.learner_throughput import BARE_SECTIONS, BareLoop, device_batch
from configs.loader import CONFIG_DIR, load_config
from learners.learner import PHASES, Learner, PhaseTimer, keep_freed_memory
from learners.replay import empty_chunk

UPDATES = 3


def config(algorithm: str):
    return load_config(
        [CONFIG_DIR / "quickstart.yaml", CONFIG_DIR / "debug.yaml"],
        [
            f"agent.algorithm={algorithm}",
            "learner.learning_starts=0",
            "learner.batch_size=8",
            "learner.publish_every_updates=2",
            "learner.device=cpu",
            "agent.guidance.vmr_weight=0.1",
        ],
    )


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


def test_phase_times_are_positive_and_add_up_to_at_most_the_updates_wall_time(tmp_path):
    learner = Learner(config("drqv2"), tmp_path)
    learner.add(rows(64))
    learner.update()  # before the reset: not counted
    learner.reset_phase_times()
    started = time.perf_counter()
    for _ in range(UPDATES):
        learner.update()  # publishes once (every 2 updates)
    wall = time.perf_counter() - started
    phases = learner.phase_times()
    assert set(phases) == set(PHASES)
    assert all(seconds > 0 for seconds in phases.values()), phases
    assert sum(phases.values()) <= wall
    report = learner.report()
    assert report["time/update_s"] == pytest.approx(phases["update"] / UPDATES)
    learner.reset_phase_times()
    assert set(learner.phase_times().values()) == {0.0}


@pytest.mark.parametrize("algorithm", ["drqv2", "sac", "td3bc"])
def test_the_benchmarks_bare_loop_steps_every_algorithm(tmp_path, algorithm):
    """The bare loop the benchmark compares against, built from the agent's public pieces only, trains
    the agent's own networks (the critic every update, the actor on its turns) and times its sections."""
    learner = Learner(config(algorithm), tmp_path)
    learner.add(rows(64))
    agent = learner.agent
    batch, _ = agent.batch.sample(learner.replay, 8)
    bare = BareLoop(agent, device_batch(agent, batch), learner.env_steps, PhaseTimer(BARE_SECTIONS))
    before = {name: [p.detach().clone() for p in module.parameters()] for name, module in agent.modules().items()}
    for _ in range(2):  # TD3+BC's actor and targets step every second update
        bare()
    for name, module in agent.modules().items():
        assert any(not torch.equal(old, new) for old, new in zip(before[name], module.parameters())), name
    assert agent.update_count == 2
    assert all(seconds > 0 for seconds in bare.sections.seconds.values()), bare.sections.seconds
