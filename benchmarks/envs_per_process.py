"""Steps/s of N driving environments held in one process against N processes, printed as JSON.

    .venv/bin/python benchmarks/envs_per_process.py [--town Town01] [--counts 1,2,4] [--steps 600]

Layouts, all measured in this one run (their ratios are what to compare on a noisy machine):
- in_process: a SyncVectorEnv of N envs here: the first in libsumo, the others each in a SUMO
  server over TraCI (envs/sumo/connection.py: Mentor's choice for extra in-process envs);
- child_processes: the first env here in libsumo, each other one in a child Python process of its
  own, stepped in turn (the alternative design for extra in-process envs: a proxy per env);
- processes: an AsyncVectorEnv of N spawned processes (stepped in parallel: bounded by the cores);
- traci_alone: one env over TraCI, against in_process N=1 (libsumo): the transport's own cost.

Every env drives its privileged expert (the action sent is ignored by `ExpertDriven`), so episodes
look like training episodes and the expert runs wherever the env runs. `steps` counts vector steps;
env steps/s = N x vector steps / seconds, resets included.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time

import gymnasium as gym
import numpy as np

import envs
from envs.expert import expert_action


class ExpertDriven(gym.Wrapper):
    """Steps with the env's own expert action whatever action is sent (for throughput measurements)."""

    def step(self, action):
        return self.env.step(expert_action(*self.env.unwrapped.ground_truth()))


def make(town: str, traffic: str, seed: int, sumo_transport: str = "auto") -> gym.Env:
    return ExpertDriven(envs.make_env(town=town, traffic=traffic, seed=seed, sumo_transport=sumo_transport))


class ChildProcesses:
    """The first env in this process, every other one in a child process of its own, stepped in turn."""

    def __init__(self, factories):
        self.local = factories[0]()
        self.children = [gym.vector.AsyncVectorEnv([f], context="spawn") for f in factories[1:]]
        self.num_envs = len(factories)

    def reset(self, seed: int):
        self.local.reset(seed=seed)
        for i, child in enumerate(self.children):
            child.reset(seed=seed + 1 + i)

    def step(self, actions):
        _, _, terminated, truncated, _ = self.local.step(actions[0])
        if terminated or truncated:
            self.local.reset()
        for i, child in enumerate(self.children):  # autoreset inside
            child.step(actions[i + 1 : i + 2])

    def close(self):
        self.local.close()
        for child in self.children:
            child.close()


def timed(vec, steps: int, seed: int) -> dict:
    vec.reset(seed=seed)
    actions = np.zeros((vec.num_envs, 2), np.float32)
    started = time.perf_counter()
    for _ in range(steps):
        vec.step(actions)
    seconds = time.perf_counter() - started
    return {
        "num_envs": vec.num_envs,
        "env_steps_per_s": vec.num_envs * steps / seconds,
        "vector_step_ms": 1e3 * seconds / steps,
    }


def build(layout: str, n: int, town: str, traffic: str, seed: int):
    if layout == "traci_alone":
        return gym.vector.SyncVectorEnv([functools.partial(make, town, traffic, seed, "traci")])
    factories = [functools.partial(make, town, traffic, seed + i) for i in range(n)]
    if layout == "in_process":
        return gym.vector.SyncVectorEnv(factories)
    if layout == "child_processes":
        return ChildProcesses(factories)
    return gym.vector.AsyncVectorEnv(factories, context="spawn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--town", default="Town01")
    parser.add_argument("--traffic", default="regular")
    parser.add_argument("--counts", default="1,2,4", help="numbers of environments")
    parser.add_argument("--steps", type=int, default=600, help="vector steps per measurement")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    plan = [("traci_alone", 1)] + [
        (layout, n) for n in counts for layout in ("in_process", "child_processes", "processes")
    ]
    results: dict = {layout: {} for layout, _ in plan}
    for layout, n in plan:
        vec = build(layout, n, args.town, args.traffic, args.seed)
        try:
            results[layout][str(n)] = timed(vec, args.steps, args.seed)
        finally:
            vec.close()
    single = results["in_process"]["1"]["env_steps_per_s"]
    results["traci_cost_ratio"] = results["traci_alone"]["1"]["env_steps_per_s"] / single
    # Per-env throughput of N in one process against one libsumo env (1.0: an extra env costs what
    # the first does; the in-process layouts share one core, so this is the cost per extra env).
    results["per_env_ratio"] = {
        layout: {n: results[layout][n]["env_steps_per_s"] / int(n) / single for n in results[layout]}
        for layout in ("in_process", "child_processes", "processes")
    }
    results["setting"] = {
        "town": args.town,
        "traffic": args.traffic,
        "vector_steps": args.steps,
        "cores": os.cpu_count(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "python": platform.python_version(),
    }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
