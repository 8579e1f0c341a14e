"""Environment steps per second on one process, with and without the BEV, printed as JSON.

    .venv/bin/python benchmarks/env_steps.py [--town Town01] [--traffic regular] [--steps 3000] [--repeats 3]

The expert drives so that episodes look like training episodes; only the time inside env.step is
counted (wall and process CPU time; resets are reported apart, and with them in
`env_steps_per_s_with_resets`), and the expert's own time is reported separately. Three settings run in
this one process, interleaved `--repeats` times, and each reports the median of its runs:
`with_bev` is the observation a rollout worker gets (the BEV masks; no RGB image, which workers
whose feedback reads no image leave out: DrivingSettings.rgb_bev), `with_bev_and_rgb` adds
info["rgb_bev"] (the gymnasium default; what CLIP/VLM feedback and collections read), and
`without_bev` is the simulation alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time

import numpy as np

from envs.driving_env import DrivingEnv
from envs.expert import expert_action


def measure(env: DrivingEnv, steps: int, seed: int) -> dict:
    """Wall and CPU time inside env.step, resets apart (the first one restarts SUMO: ~1 s)."""
    step_wall = step_cpu = expert_time = 0.0
    resets, reset_time, route = 0, 0.0, 0
    step_times = []

    def reset(**kwargs) -> None:
        nonlocal resets, reset_time
        t0 = time.perf_counter()
        env.reset(**kwargs)
        resets, reset_time = resets + 1, reset_time + time.perf_counter() - t0

    reset(seed=seed, options={"route": route})
    for _ in range(steps):
        t0 = time.perf_counter()
        action = expert_action(*env.ground_truth())
        t1, c1 = time.perf_counter(), time.process_time()
        _, _, terminated, truncated, _ = env.step(action)
        t2, c2 = time.perf_counter(), time.process_time()
        expert_time += t1 - t0
        step_wall, step_cpu = step_wall + t2 - t1, step_cpu + c2 - c1
        step_times.append(t2 - t1)
        if terminated or truncated:
            route = (route + 1) % 25
            reset(options={"route": route})
    return {
        "env_steps_per_s": steps / step_wall,
        "env_steps_per_cpu_s": steps / step_cpu,
        "env_steps_per_s_with_resets": steps / (step_wall + reset_time),
        "step_ms_median": 1e3 * float(np.median(step_times)),
        "step_ms_p95": 1e3 * float(np.percentile(step_times, 95)),
        "reset_s_mean": reset_time / resets,
        "expert_ms_mean": 1e3 * expert_time / steps,
        "episodes_finished": resets - 1,
    }


def median_run(measured: list[dict]) -> dict:
    """The run with the median steps/s, and every run's steps/s."""
    ordered = sorted(measured, key=lambda run: run["env_steps_per_s"])
    return ordered[len(ordered) // 2] | {"runs_steps_per_s": [round(r["env_steps_per_s"], 1) for r in measured]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--town", default=None)
    parser.add_argument("--traffic", default="regular")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setting, interleaved; the median is kept")
    args = parser.parse_args()
    settings = {
        "with_bev": {"render_bev": True, "rgb_bev": False},
        "with_bev_and_rgb": {"render_bev": True, "rgb_bev": True},
        "without_bev": {"render_bev": False, "rgb_bev": False},
    }
    runs: dict[str, list[dict]] = {label: [] for label in settings}
    env = DrivingEnv(town=args.town, traffic=args.traffic)
    try:
        for _ in range(args.repeats):
            for label, fields in settings.items():
                env.config = dataclasses.replace(env.config, **fields)
                runs[label].append(measure(env, args.steps, args.seed))
    finally:
        env.close()
    results = {label: median_run(measured) for label, measured in runs.items()}
    for label in ("with_bev", "with_bev_and_rgb"):
        results[f"{label}_cost_ratio"] = results[label]["env_steps_per_s"] / results["without_bev"]["env_steps_per_s"]
    results["setting"] = {
        "town": env.config.town,
        "traffic": args.traffic,
        "steps": args.steps,
        "repeats": args.repeats,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
    }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
