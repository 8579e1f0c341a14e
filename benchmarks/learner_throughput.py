"""Actor-critic learner updates per second: Mentor's `Learner.update()` against a bare PyTorch loop of the
same networks, batch, optimisers and augmentation on the same hardware, measured in one run (prints JSON).

    .venv/bin/python benchmarks/learner_throughput.py [--algo drqv2 sac td3bc] [--updates 20] [--rounds 2]
        [--device cpu|cuda] [--threads 1] [--batch 64] [--network small] [--malloc both|kept|default]

- mentor: `Learner.update()` as a run does it, on the quickstart's settings (configs/quickstart.yaml:
  DrQ-v2, small network, batch 64, AWAG on): the n-step TransitionBatch drawn from a ReplayBuffer of
  synthetic rows (sparse BEV masks with the env's value sets), numpy -> torch, the random shift, the
  critic and actor steps, the metrics and the finiteness check;
- bare: what a CleanRL-style loop does with the same modules: one batch already on the device as
  tensors, the same random shift, losses and optimiser steps, no replay, no metrics;
- ratio = mentor / bare (aim: >= 0.9); `breakdown_ms` says where one Mentor update's time goes.
Both loops alternate `--rounds` times so drifting machine load hits both alike; the best round counts.
On the CPU the clock is the process's CPU time (time.process_time): with --threads 1 it is what the
updates cost whatever else runs on the machine (wall-clock rates are reported beside it); on a GPU it is
wall time with a device sync. --threads 1 is what the quickstart's learner gets on Ray (an actor with
num_cpus=1 runs with OMP_NUM_THREADS=1); 0 keeps torch's default (one per core).
--malloc both (the default on the CPU) runs everything twice, each in its own process: with the
learner's allocator setting (learners/learner.keep_freed_memory) and with glibc's default, to show
what the page faults of unmapped temporaries cost.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

import learners.learner
from configs.loader import CONFIG_DIR, load_config
from envs.synthetic_bev import synthetic_bevs
from learners.actor_critic.agent import ActorCriticAgent
from learners.learner import Learner
from learners.networks import TruncatedNormal, random_shift, tanh_gaussian_sample
from learners.replay import empty_chunk

ROWS, EPISODE = 2000, 500


# ------------------------------------------------------------------------------------- synthetic rows
def synthetic_rows(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    chunk = empty_chunk(n)
    chunk["bev"][:] = synthetic_bevs(rng, n)
    chunk["state"][:] = rng.uniform(-1, 1, chunk["state"].shape)
    chunk["action"][:] = rng.uniform(-1, 1, (n, 2))
    chunk["reward"][:] = rng.normal(size=n)
    chunk["step"][:] = np.arange(n)
    chunk["episode_id"][:] = np.arange(n) // EPISODE
    chunk["is_first"][::EPISODE] = True
    chunk["is_last"][EPISODE - 1::EPISODE] = True
    advised = (rng.random(n) < 0.9) & ~chunk["is_last"]  # the async advisor answers most steps
    chunk["vlm_action"][advised] = rng.uniform(-1, 1, (int(advised.sum()), 2))
    chunk["vlm_action_mask"][:] = advised
    return chunk


def filled_learner(algo: str, batch: int, network: str, device: str, threads: int, tmp: str) -> Learner:
    overrides = [f"agent.algorithm={algo}", f"agent.network={network}", f"learner.batch_size={batch}",
                 "learner.learning_starts=0", f"learner.device={device}", f"learner.torch_threads={threads}"]
    learner = Learner(load_config([CONFIG_DIR / "quickstart.yaml"], overrides), tmp, device=device)
    learner.replay.add(synthetic_rows(ROWS))
    return learner


# ------------------------------------------------------------------------------------------ bare loop
def bare_step(agent: ActorCriticAgent, t: dict[str, torch.Tensor], iota: float, gen: torch.Generator) -> None:
    """One update as a CleanRL-style script writes it: no metrics, no checks, tensors already there."""
    cfg, p = agent.config, agent.params
    feat = agent.encoder(random_shift(t["bev"], cfg.augment_pad, gen))
    with torch.no_grad():
        next_feat = agent.encoder(random_shift(t["next_bev"], cfg.augment_pad, gen))
        target = t["reward"] + t["discount"] * _next_value(agent, next_feat, t["next_state"], gen)
    q1, q2 = agent.critic(feat, t["state"], t["action"])
    agent.critic_opt.zero_grad(set_to_none=True)
    (F.mse_loss(q1, target) + F.mse_loss(q2, target)).backward()
    agent.critic_opt.step()
    if agent.name in ("td3", "td3bc") and agent.update_count % p.policy_delay:
        agent.update_count += 1
        return
    feat = feat.detach()
    loss, log_prob = _actor_loss(agent, feat, t, gen)
    if iota > 0:
        loss = loss + iota * _awag(agent, loss, feat, t)
    agent.actor_opt.zero_grad(set_to_none=True)
    loss.backward()
    agent.actor_opt.step()
    if agent.name == "sac":
        alpha_loss = (agent.log_alpha.exp() * (-log_prob.detach() - agent.target_entropy)).mean()
        agent.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        agent.alpha_opt.step()
    with torch.no_grad():
        pairs = [(agent.critic_target, agent.critic)]
        if hasattr(agent, "actor_target"):
            pairs.append((agent.actor_target, agent.actor))
        for target_net, net in pairs:
            torch._foreach_lerp_(list(target_net.parameters()), list(net.parameters()), cfg.tau)
    agent.update_count += 1


def _next_value(agent, next_feat, next_state, gen):
    p = agent.params
    if agent.name == "drqv2":
        mu, _ = agent.actor(next_feat, next_state)
        action = TruncatedNormal(mu, agent.params.std_end).sample(clip=p.std_clip, generator=gen)
        return torch.min(*agent.critic_target(next_feat, next_state, action))
    if agent.name == "sac":
        mean, log_std = agent.actor(next_feat, next_state)
        action, log_prob = tanh_gaussian_sample(mean, log_std, gen)
        return torch.min(*agent.critic_target(next_feat, next_state, action)) - agent.log_alpha.exp() * log_prob
    mu, _ = agent.actor_target(next_feat, next_state)
    noise = (torch.randn(mu.shape, generator=gen, device=mu.device) * p.policy_noise).clamp(-p.noise_clip, p.noise_clip)
    return torch.min(*agent.critic_target(next_feat, next_state, (mu + noise).clamp(-1, 1)))


def _actor_loss(agent, feat, t, gen):
    state = t["state"]
    if agent.name == "drqv2":
        mu, _ = agent.actor(feat, state)
        action = TruncatedNormal(mu, agent.params.std_end).sample(clip=agent.params.std_clip, generator=gen)
        return -torch.min(*agent.critic(feat, state, action)).mean(), None
    if agent.name == "sac":
        mean, log_std = agent.actor(feat, state)
        action, log_prob = tanh_gaussian_sample(mean, log_std, gen)
        alpha = agent.log_alpha.exp().detach()
        return (alpha * log_prob - torch.min(*agent.critic(feat, state, action))).mean(), log_prob
    mu, _ = agent.actor(feat, state)
    q1, _ = agent.critic(feat, state, mu)
    return -q1.mean() * agent.params.alpha / q1.abs().mean().detach() + F.mse_loss(mu, t["action"]), None


def _awag(agent, base_loss, feat, t):
    g, state, advice, mask = agent.config.guidance, t["state"], t["vlm_action"], t["vlm_action_mask"]
    with torch.no_grad():
        q_pi = torch.min(*agent.critic(feat, state, agent.actor.mode(feat, state)))
        advantage = torch.min(*agent.critic(feat, state, advice)) - q_pi
        weight = (advantage > 0) * torch.exp(torch.clamp(advantage / g.awag_temperature, max=np.log(g.awag_max_weight)))
    log_prob = agent.log_prob(feat, state, advice, 0)
    return (mask * weight * -log_prob).mean()


# ------------------------------------------------------------------------------------------- timing
def clock(device: str):
    """CPU time of this process on the CPU (insensitive to other processes' load), wall time on a GPU."""
    return time.perf_counter if device.startswith("cuda") else time.process_time


def timed(fn, updates: int, device: str) -> tuple[float, float]:
    """(updates per clock second, updates per wall second)."""
    fn()  # warm-up (allocator, kernels)
    _sync(device)
    tick = clock(device)
    start, wall = tick(), time.perf_counter()
    for _ in range(updates):
        fn()
    _sync(device)
    return updates / (tick() - start), updates / (time.perf_counter() - wall)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def breakdown(learner: Learner, updates: int, device: str) -> dict[str, float]:
    """Milliseconds per update in each section, by wrapping the learner's and the agent's steps (with a
    device sync at each section's end on a GPU, so that its kernels are counted where they are queued)."""
    totals: dict[str, float] = defaultdict(float)
    agent = learner.agent
    tick = clock(device)

    @contextmanager
    def section(name):
        start = tick()
        yield
        _sync(device)
        totals[name] += tick() - start

    def wrap(obj, method, name):
        original = getattr(obj, method)

        def timed_call(*args, **kwargs):
            with section(name):
                return original(*args, **kwargs)
        setattr(obj, method, timed_call)
        return original

    sections = [(learner, "_sample", "sample (replay + shaping)"), (agent, "_to_tensors", "to tensors / to device"),
                (agent, "_augment", "augmentation"), (agent.encoder, "forward", "encoder forward"),
                (agent, "_update_critic", "critic loss + backward + step"),
                (agent, "_update_actor", "actor loss + backward + step"), (agent, "update_targets", "target update")]
    originals = [(obj, method, wrap(obj, method, name)) for obj, method, name in sections]
    try:
        learner.update()
        totals.clear()
        start = tick()
        for _ in range(updates):
            learner.update()
        _sync(device)
        whole = tick() - start
    finally:
        for obj, method, original in originals:
            if obj is agent.encoder:
                del obj.forward  # back to the class's method
            else:
                setattr(obj, method, original)
    out = {name: 1e3 * value / updates for name, value in totals.items()}
    out["other (metrics, checks, locks, publish)"] = 1e3 * whole / updates - sum(out.values())
    out["total"] = 1e3 * whole / updates
    return {name: round(value, 2) for name, value in out.items()}


def measure(algo: str, args: argparse.Namespace, tmp: str) -> dict:
    learner = filled_learner(algo, args.batch, args.network, args.device, args.threads, tmp)
    agent = learner.agent
    batch_np, _ = agent.batch.sample(learner.replay, args.batch)
    tensors = agent._to_tensors(batch_np)
    g = agent.config.guidance
    iota = g.awag_weight if g.awag_weight > 0 else 0.0
    gen = torch.Generator(device=agent.device).manual_seed(0)
    loops = {"mentor": learner.update, "bare": lambda: bare_step(agent, tensors, iota, gen)}
    rounds = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name, fn in loops.items():
            rounds[name].append(timed(fn, args.updates, args.device))
    best = {name: max(rate for rate, _ in values) for name, values in rounds.items()}
    best_wall = {name: max(wall for _, wall in values) for name, values in rounds.items()}
    return {"algo": algo, "network": args.network, "batch": args.batch, "parameters": agent.parameter_count(),
            "mentor_updates_per_s": round(best["mentor"], 3), "bare_updates_per_s": round(best["bare"], 3),
            "ratio": round(best["mentor"] / best["bare"], 3),
            "wall_updates_per_s": {name: round(value, 3) for name, value in best_wall.items()},
            "breakdown_ms": breakdown(learner, args.updates, args.device)}


def run(args: argparse.Namespace) -> dict:
    if args.malloc == "default":  # glibc's own behaviour: the learner leaves the allocator alone
        learners.learner.keep_freed_memory = lambda: False
    results = []
    for algo in args.algo:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(measure(algo, args, tmp))
    return {"malloc": args.malloc, "clock": "wall" if args.device.startswith("cuda") else "process cpu time",
            "results": results}


def in_subprocess(argv: list[str], malloc: str) -> dict:
    """One variant in a fresh process: the allocator setting is process-wide and cannot be undone."""
    command = [sys.executable, __file__, *argv, "--malloc", malloc, "--json-only"]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", nargs="+", default=["drqv2"], choices=["drqv2", "sac", "td3bc"])
    parser.add_argument("--updates", type=int, default=20, help="timed updates per round and loop")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two loops")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--network", default="small", choices=["small", "foundrl"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="learner.torch_threads (0: torch's default)")
    parser.add_argument("--malloc", default="both", choices=["both", "kept", "default"],
                        help="glibc allocator: the learner's setting (kept), glibc's default, or both")
    parser.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    raw = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(raw)
    if args.json_only:
        print(json.dumps(run(args)))
        return 0
    if args.malloc == "both" and not args.device.startswith("cuda"):
        passed = [a for i, a in enumerate(raw) if a != "--malloc" and (i == 0 or raw[i - 1] != "--malloc")]
        variants = [in_subprocess(passed, malloc) for malloc in ("kept", "default")]
    else:
        variants = [run(args)]
    accelerator = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None
    hardware = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "cpu_count": os.cpu_count(),
                "accelerator": accelerator, "load_average_1m": round(os.getloadavg()[0], 2),
                "python": platform.python_version(), "torch": torch.__version__}
    print(json.dumps({"hardware": hardware, "device": args.device, "threads": args.threads,
                      "updates": args.updates, "rounds": args.rounds, "variants": variants}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
