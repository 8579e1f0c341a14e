"""Environment steps per second on one process, with and without the BEV, printed as JSON.

    .venv/bin/python benchmarks/env_steps.py [--town Town01] [--traffic regular] [--steps 3000]

The expert drives so that episodes look like training episodes; only the time inside env.step
(and reset) is counted, and the expert's own time is reported separately. Both settings run in
this one process, one after the other, so their ratio is comparable on a noisy machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import numpy as np

from envs.driving_env import DrivingEnv
from envs.expert import expert_action


def measure(env: DrivingEnv, steps: int, seed: int) -> dict:
    env_time = expert_time = 0.0
    episodes, route = 0, 0
    started = time.perf_counter()
    env.reset(seed=seed, options={"route": route})
    env_time += time.perf_counter() - started
    step_times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        action = expert_action(*env.ground_truth())
        t1 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        t2 = time.perf_counter()
        expert_time += t1 - t0
        env_time += t2 - t1
        step_times.append(t2 - t1)
        if terminated or truncated:
            episodes, route = episodes + 1, (route + 1) % 25
            t0 = time.perf_counter()
            env.reset(options={"route": route})
            env_time += time.perf_counter() - t0
    return {
        "env_steps_per_s": steps / env_time,
        "step_ms_median": 1e3 * float(np.median(step_times)),
        "step_ms_p95": 1e3 * float(np.percentile(step_times, 95)),
        "expert_ms_mean": 1e3 * expert_time / steps,
        "episodes_finished": episodes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--town", default=None)
    parser.add_argument("--traffic", default="regular")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = {}
    env = DrivingEnv(town=args.town, traffic=args.traffic)
    try:
        for label, render in (("with_bev", True), ("without_bev", False)):
            env.config = dataclasses.replace(env.config, render_bev=render)
            results[label] = measure(env, args.steps, args.seed)
    finally:
        env.close()
    results["bev_cost_ratio"] = results["with_bev"]["env_steps_per_s"] / results["without_bev"]["env_steps_per_s"]
    results["setting"] = {"town": env.config.town, "traffic": args.traffic, "steps": args.steps,
                          "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
                          "python": platform.python_version()}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
