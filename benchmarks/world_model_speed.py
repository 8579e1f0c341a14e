"""World-model updates per second per preset: Mentor's learner path against a bare PyTorch loop of the
same model on the same hardware, measured in the same run (prints JSON).

    python benchmarks/world_model_speed.py --presets debug S --updates 10 [--device cuda] [--batch 16 --length 64]

- mentor: `Learner.update()` as a run does it: the SequenceBatch drawn from a ReplayBuffer (links
  followed, rows gathered), numpy -> torch, the model, both critics and the actor stepped, metrics;
- bare: the same networks and the same three optimiser steps on tensors already on the device, built
  once, no replay, no metrics: the most a training loop of this model can do here.
The ratio mentor / bare is the overhead of everything Mentor adds (aim: >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from configs.loader import load_config
from learners.learner import Learner
from learners.replay import empty_chunk


def filled_learner(preset: str, batch: int, length: int, device: str, tmp: str) -> Learner:
    config = load_config(
        ["configs/vlsafe/offline.yaml"],
        [
            f"agent.vlsafe.preset={preset}",
            f"agent.vlsafe.sequence_length={length}",
            f"learner.batch_size={batch}",
            "data.dataset=null",
            "run.mode=local",
            "agent.vlsafe.safety_weighting=vlsafe",
            "learner.learning_starts=0",
            "learner.replay_capacity=4000",
            "workers.num_workers=1",
            "feedback.model=clip",
            "feedback.wanted=[safety]",
            f"learner.device={device}",
            "learner.torch_threads=0",
        ],
    )
    learner = Learner(config, tmp, device=device)
    rng = np.random.default_rng(0)
    n, episode = 3000, 500
    chunk = empty_chunk(n)
    chunk["step"][:] = np.arange(n)
    chunk["episode_id"][:] = np.arange(n) // episode
    chunk["is_first"][::episode] = True
    chunk["is_last"][episode - 1 :: episode] = True
    chunk["bev"][:] = (rng.random((n, 15, 96, 96)) < 0.1).astype(np.uint8) * 255
    chunk["action"][:] = rng.uniform(-1, 1, (n, 2))
    chunk["reward"][:] = rng.normal(size=n)
    chunk["safety"][:] = rng.random(n)
    chunk["safety_mask"][:] = 1.0
    learner.replay.add(chunk)
    return learner


def bare_step(agent, t: dict[str, torch.Tensor]) -> None:
    """The same three optimiser steps as WorldModelAgent.update, with nothing around them."""
    post = agent.model.observe(t["bev"], t["state"], t["prev_action"], t["is_first"], agent._rng)
    feat = agent.model.features(post["h"], post["z"])
    losses, _ = agent._model_losses(feat, post, t)
    agent.model_opt.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    torch.nn.utils.clip_grad_norm_(agent.model.parameters(), agent.params.grad_clip)
    agent.model_opt.step()
    agent._update_behaviour((post["h"].detach(), post["z"].detach()), feat.detach(), t)


def timed(fn, updates: int, device: str) -> float:
    fn()  # warm-up (allocator, kernels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(updates):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return updates / (time.perf_counter() - start)


def measure(preset: str, batch: int, length: int, updates: int, device: str, tmp: str) -> dict:
    learner = filled_learner(preset, batch, length, device, tmp)
    agent = learner.agent
    batch_np, _ = agent.batch.sample(learner.replay, batch)
    tensors = agent._to_tensors(batch_np)
    rounds = {"mentor": [], "bare": []}
    for _ in range(2):  # alternate, so that drifting machine load hits both alike
        rounds["mentor"].append(timed(learner.update, updates, device))
        rounds["bare"].append(timed(lambda: bare_step(agent, tensors), updates, device))
    mentor, bare = max(rounds["mentor"]), max(rounds["bare"])
    return {
        "preset": preset,
        "parameters": agent.parameter_count(),
        "batch": f"{batch}x{length}",
        "mentor_updates_per_s": round(mentor, 3),
        "bare_updates_per_s": round(bare, 3),
        "ratio": round(mentor / bare, 3),
        "replayed_steps_per_s": round(mentor * batch * length, 1),
    }


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["debug", "S"])
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    hardware = (
        torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    )
    results = []
    for preset in args.presets:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(measure(preset, args.batch, args.length, args.updates, args.device, tmp))
    print(json.dumps({"hardware": hardware, "torch": torch.__version__, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
