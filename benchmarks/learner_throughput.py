"""Actor-critic learner updates per second: Mentor's `Learner.update()` against a bare PyTorch loop of the
same networks, batch, optimisers and augmentation on the same hardware, measured in one run (prints JSON).

    .venv/bin/python benchmarks/learner_throughput.py [--algo drqv2 sac td3bc] [--updates 20] [--rounds 2]
        [--device cpu|cuda] [--threads 1] [--batch 64] [--network small] [--malloc both|kept|default]

- mentor: `Learner.update()` as a run does it, on the quickstart's settings (configs/quickstart.yaml:
  DrQ-v2, small network, batch 64, AWAG on): the n-step TransitionBatch drawn from a ReplayBuffer of
  synthetic rows (sparse BEV masks with the env's value sets), numpy -> torch, the random shift, the
  critic and actor steps, the metrics and the finiteness check;
- bare: what a CleanRL-style loop does with the same modules: one batch already on the device as
  tensors, the same random shift, losses and optimiser steps, no replay, no metrics (BareLoop: one loop for
  every algorithm, from the agent's public modules(), optimizers() and loss methods);
- ratio = mentor / bare (aim: >= 0.9); `breakdown_ms` says where an update's time goes: `mentor` from the
  learner's own phase timers (Learner.phase_times: lock, sample, update, publish; `other` is the rest of
  update()), `bare` from the bare loop's sections (where the gradient step itself goes).
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
from collections.abc import Callable

import numpy as np
import torch

import learners.learner
from configs.loader import CONFIG_DIR, load_config
from envs.synthetic_bev import synthetic_bevs
from learners.actor_critic.agent import FLOAT_KEYS, ActorCriticAgent
from learners.actor_critic.networks import visible_state
from learners.learner import Learner, PhaseTimer
from learners.losses import guidance
from learners.networks import random_shift
from learners.replay import empty_chunk

ROWS, EPISODE = 2000, 500
BARE_SECTIONS = (
    "random shift",
    "encoder forward",
    "critic loss + backward + step",
    "actor loss + backward + step",
    "target update",
)


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
    chunk["is_last"][EPISODE - 1 :: EPISODE] = True
    advised = (rng.random(n) < 0.9) & ~chunk["is_last"]  # the async advisor answers most steps
    chunk["vlm_action"][advised] = rng.uniform(-1, 1, (int(advised.sum()), 2))
    chunk["vlm_action_mask"][:] = advised
    return chunk


def filled_learner(algo: str, args: argparse.Namespace, tmp: str) -> Learner:
    """The quickstart's learner for `algo`, its phases timed on the benchmark's clock, over ROWS synthetic rows."""
    overrides = [
        f"agent.algorithm={algo}",
        f"agent.network={args.network}",
        f"learner.batch_size={args.batch}",
        "learner.learning_starts=0",
        f"learner.device={args.device}",
        f"learner.torch_threads={args.threads}",
    ]
    config = load_config([CONFIG_DIR / "quickstart.yaml"], overrides)
    learner = Learner(config, tmp, device=args.device, phase_clock=clock(args.device))
    learner.replay.add(synthetic_rows(ROWS))
    return learner


# ------------------------------------------------------------------------------------------ bare loop
def device_batch(agent: ActorCriticAgent, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The sampled batch on the agent's device, converted once (a bare loop's batch is already there): the
    BEVs as uint8, the rest float32, the state as the networks see it, unadvised rows' advice zeroed."""
    rows = len(batch["reward"])
    tensors = {key: torch.as_tensor(batch[key], device=agent.device) for key in ("bev", "next_bev")}
    for key in FLOAT_KEYS:
        value = batch.get(key)
        if value is None:  # no advice or label in the replay: a zero mask
            value = np.zeros((rows,) if key.endswith("_mask") else (rows, 2), np.float32)
        tensors[key] = torch.as_tensor(value, device=agent.device, dtype=torch.float32)
    for key in ("state", "next_state"):
        tensors[key] = visible_state(tensors[key], agent.config)
    advised = tensors["vlm_action_mask"][:, None] > 0
    tensors["vlm_action"] = torch.where(advised, tensors["vlm_action"], torch.zeros_like(tensors["vlm_action"]))
    return tensors


class BareLoop:
    """One update as a CleanRL-style script writes it: the batch already on the device as tensors, no
    replay, no finiteness checks, no metrics kept, no publishing; the agent's own modules, optimisers and
    losses, the same random shift and the same guidance terms (learners/losses/guidance).

    Written once for every actor-critic algorithm: what differs between DrQ-v2, SAC, TD3 and TD3+BC is
    behind the agent's public critic_loss / actor_loss / log_prob (each binds the pure functions of
    learners/losses/<algorithm>.py to its networks and settings), actor_turn (TD3's delay),
    after_actor_step (SAC's temperature) and update_targets. The losses return their metrics as numbers
    (a few .item() calls, microseconds on a CPU), so this loop pays those too.

    `sections` times the update's parts; in a rate measurement on the benchmark's clock (what the
    learner's own phase timers cost), for the breakdown on a clock that syncs the device first."""

    def __init__(
        self, agent: ActorCriticAgent, batch: dict[str, torch.Tensor], step: int, sections: PhaseTimer, seed: int = 0
    ):
        self.agent, self.batch, self.step, self.sections = agent, batch, step, sections
        modules, optimizers = agent.modules(), agent.optimizers()
        self.encoder, self.actor, self.critic = modules["encoder"], modules["actor"], modules["critic"]
        self.critic_opt, self.actor_opt = optimizers["critic_opt"], optimizers["actor_opt"]
        self.pad, self.guidance = agent.config.augment_pad, agent.config.guidance
        g = self.guidance  # the schedules at the batch's fixed step: constants for the whole benchmark
        self.vmr_lambda = (
            guidance.vmr_lambda(step, g.vmr_weight, g.vmr_hold_steps, g.vmr_decay_end, g.vmr_schedule)
            if g.vmr_weight > 0
            else 0.0
        )
        self.awag_iota = (
            guidance.awag_iota(step, g.awag_weight, g.awag_decay_steps, g.awag_power, g.awag_schedule)
            if g.awag_weight > 0
            else 0.0
        )
        self.rng = torch.Generator(device=agent.device).manual_seed(seed)

    def __call__(self) -> None:
        lap, t = self.sections.lap, self.batch
        started = self.sections.clock()
        bev, next_bev = random_shift(t["bev"], self.pad, self.rng), random_shift(t["next_bev"], self.pad, self.rng)
        started = lap("random shift", started)
        feat = self.encoder(bev)
        with torch.no_grad():
            next_feat = self.encoder(next_bev)
        started = lap("encoder forward", started)
        self._critic_step(feat, next_feat)
        started = lap("critic loss + backward + step", started)
        if self.agent.actor_turn():
            self._actor_step(feat.detach())
            started = lap("actor loss + backward + step", started)
            self.agent.update_targets()
            lap("target update", started)
        self.agent.update_count += 1  # drives actor_turn (TD3's delay), as in agent.update

    def _critic_step(self, feat: torch.Tensor, next_feat: torch.Tensor) -> None:
        loss, _ = self.agent.critic_loss(feat, next_feat, self.batch, self.step)
        if self.vmr_lambda > 0:
            loss = loss + self.vmr_lambda * self._vmr(feat)
        _gradient_step(self.critic_opt, loss)

    def _vmr(self, feat: torch.Tensor) -> torch.Tensor:
        t = self.batch
        q1_vlm, q2_vlm = self.critic(feat, t["state"], t["vlm_action"])
        with torch.no_grad():
            q1_data, q2_data = self.critic(feat, t["state"], t["action"])
        loss, _ = guidance.vmr_loss(q1_vlm, q2_vlm, q1_data, q2_data, t["vlm_action_mask"], self.guidance.vmr_delta)
        return loss

    def _actor_step(self, feat: torch.Tensor) -> None:
        loss, metrics = self.agent.actor_loss(feat, self.batch, self.step)
        if self.awag_iota > 0:
            loss = self._with_awag(loss, feat)
        _gradient_step(self.actor_opt, loss)
        self.agent.after_actor_step(metrics)

    def _with_awag(self, base_loss: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        g, t = self.guidance, self.batch
        state, advice = t["state"], t["vlm_action"]
        with torch.no_grad():
            q_pi = torch.min(*self.critic(feat, state, self.actor.mode(feat, state)))
            q_advice = torch.min(*self.critic(feat, state, advice))
        scaled, _ = guidance.scaled_base_actor_loss(base_loss, q_pi, g.bc_alpha)
        awag, _ = guidance.awag_loss(
            q_advice,
            q_pi,
            self.agent.log_prob(feat, state, advice, self.step),
            t["vlm_action_mask"],
            g.awag_temperature,
            g.awag_max_weight,
        )
        return scaled + self.awag_iota * awag


def _gradient_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# ------------------------------------------------------------------------------------------- timing
def clock(device: str) -> Callable[[], float]:
    """CPU time of this process on the CPU (insensitive to other processes' load), wall time on a GPU."""
    return time.perf_counter if device.startswith("cuda") else time.process_time


def synced_clock(device: str) -> Callable[[], float]:
    """clock(device), read after the device's queued kernels are done: a section's time is then where its
    kernels ran (the learner's own phases need no sync: PhaseTimer)."""
    tick = clock(device)
    if not device.startswith("cuda"):
        return tick

    def synced() -> float:
        torch.cuda.synchronize()
        return tick()

    return synced


def timed(fn: Callable[[], object], updates: int, device: str) -> tuple[float, float]:
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


def milliseconds_per_update(seconds: dict[str, float], whole: float, updates: int) -> dict[str, float]:
    """Each part's milliseconds per update, `other` for the rest of `whole`, and the total."""
    out = {name: 1e3 * value / updates for name, value in seconds.items()}
    out["other"] = 1e3 * whole / updates - sum(out.values())
    out["total"] = 1e3 * whole / updates
    return {name: round(value, 2) for name, value in out.items()}


def mentor_phases(learner: Learner, updates: int, device: str) -> dict[str, float]:
    """Where one `Learner.update()` goes, from the learner's own phase timers (Learner.phase_times, on the
    benchmark's clock); `other`: the rest of update() (the finiteness check, the counters)."""
    tick = clock(device)
    learner.reset_phase_times()
    start = tick()
    for _ in range(updates):
        learner.update()
    _sync(device)
    return milliseconds_per_update(learner.phase_times(), tick() - start, updates)


def bare_sections(bare: BareLoop, updates: int, device: str) -> dict[str, float]:
    """Where the gradient step goes (the bare loop's parts, the same modules and losses as the agent's
    update), each section's kernels synced on a GPU; the loop's own timer is put back after."""
    rate_sections, bare.sections = bare.sections, PhaseTimer(BARE_SECTIONS, synced_clock(device))
    tick = bare.sections.clock
    try:
        start = tick()
        for _ in range(updates):
            bare()
        whole = tick() - start
        return milliseconds_per_update(bare.sections.seconds, whole, updates)
    finally:
        bare.sections = rate_sections


def measure(algo: str, args: argparse.Namespace, tmp: str) -> dict:
    learner = filled_learner(algo, args, tmp)
    agent = learner.agent
    batch, _ = agent.batch.sample(learner.replay, args.batch)
    bare = BareLoop(agent, device_batch(agent, batch), learner.env_steps, PhaseTimer(BARE_SECTIONS, clock(args.device)))
    loops = {"mentor": learner.update, "bare": bare}
    rounds = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name, fn in loops.items():
            rounds[name].append(timed(fn, args.updates, args.device))
    best = {name: max(rate for rate, _ in values) for name, values in rounds.items()}
    best_wall = {name: max(wall for _, wall in values) for name, values in rounds.items()}
    return {
        "algo": algo,
        "network": args.network,
        "batch": args.batch,
        "parameters": agent.parameter_count(),
        "mentor_updates_per_s": round(best["mentor"], 3),
        "bare_updates_per_s": round(best["bare"], 3),
        "ratio": round(best["mentor"] / best["bare"], 3),
        "wall_updates_per_s": {name: round(value, 3) for name, value in best_wall.items()},
        "breakdown_ms": {
            "mentor": mentor_phases(learner, args.updates, args.device),
            "bare": bare_sections(bare, args.updates, args.device),
        },
    }


def run(args: argparse.Namespace) -> dict:
    if args.malloc == "default":  # glibc's own behaviour: the learner leaves the allocator alone
        learners.learner.keep_freed_memory = lambda: False
    results = []
    for algo in args.algo:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(measure(algo, args, tmp))
    return {
        "malloc": args.malloc,
        "clock": "wall" if args.device.startswith("cuda") else "process cpu time",
        "results": results,
    }


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
    parser.add_argument(
        "--malloc",
        default="both",
        choices=["both", "kept", "default"],
        help="glibc allocator: the learner's setting (kept), glibc's default, or both",
    )
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
    hardware = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "cpu_count": os.cpu_count(),
        "accelerator": accelerator,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(
        json.dumps(
            {
                "hardware": hardware,
                "device": args.device,
                "threads": args.threads,
                "updates": args.updates,
                "rounds": args.rounds,
                "variants": variants,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
