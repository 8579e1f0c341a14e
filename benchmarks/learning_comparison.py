"""Learning comparison: DrQ-v2 against DrQ-v2 + VMR (expert advisor) against DrQ-v2 + the CLIP
reward (or any variants, RLlib's algorithms among them), trained on the embedded Town01 suite for
the same env-step budget and evaluated on Town02.

    .venv/bin/python benchmarks/learning_comparison.py --steps 20000 [--variants ...] [overrides ...]
    .venv/bin/python benchmarks/learning_comparison.py --steps 3000 --variants drqv2-plain sac-plain \
        rllib-ppo rllib-sac rllib-dreamerv3 [--rllib-overrides rllib.dreamerv3.training.training_ratio=8 ...]

A variant named rllib-<algo> runs `python -m baselines.rllib.train --algo <algo>` (configs/rllib/<algo>.yaml,
the same Town01 training suite, Town02 routes 0-4 and run directory layout) with --rllib-overrides.

Each variant runs `train.py --config configs/variants/<name>.yaml` with the same CPU-scale overrides:
local mode (one process: the worker, the feedback model and the learner take turns, so every
variant gets exactly samples_per_insert updates per env step however busy the machine is), a small
network and quickstart learner settings. For a GPU cluster pass `run.mode=ray
workers.num_workers=8 agent.network=foundrl ...` as overrides. A finished run of the same budget in
--out is reused, so variants can be run one at a time or side by side. Writes
comparison.png (route completion and return of training episodes against env steps) and
comparison.json (the final Town02 evaluation of each), and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("benchmark")

CPU_SCALE = [
    "run.mode=local",
    "workers.num_workers=1",
    "agent.network=small",
    "agent.lr=0.0003",
    "learner.batch_size=64",
    "learner.replay_capacity=30000",
    "learner.learning_starts=1000",
    "learner.samples_per_insert=4",
    "workers.random_steps=1000",
    "eval.routes=[0,1,2,3,4]",
    "eval.max_steps=2000",
    "run.progress_every_s=30",
]
TABLE_KEYS = (
    "route_completion",
    "driving_score",
    "infraction_penalty",
    "arrived",
    "collision_vehicle_per_km",
    "mean_speed",
)


def run_variant(name: str, steps: int, out: Path, overrides: list[str]) -> Path:
    finished = [
        d for d in sorted(out.glob(f"{name}-*")) if (d / "evaluation.json").is_file() and _config_steps(d) == steps
    ]
    if finished:  # a re-run (or the next invocation) reuses a finished run of the same budget
        logger.info("%s: reusing %s", name, finished[-1])
        return finished[-1]
    before = set(out.glob(f"{name}-*"))
    command = [
        sys.executable,
        "train.py",
        "--config",
        f"configs/variants/{name}.yaml",
        f"run.total_env_steps={steps}",
        f"agent.drqv2.std_steps={steps}",
        f"run.runs_dir={out}",
        *CPU_SCALE,
        *overrides,
    ]
    logger.info("running %s", " ".join(command))
    started = time.monotonic()
    subprocess.run(command, check=True)
    (run_dir,) = set(out.glob(f"{name}-*")) - before
    logger.info("%s done in %.0f s: %s", name, time.monotonic() - started, run_dir)
    return run_dir


def run_rllib(name: str, steps: int, out: Path, overrides: list[str]) -> Path:
    """RLlib's algorithm of `name` (rllib-ppo, rllib-sac, rllib-dreamerv3) into out/<name>-<steps>."""
    run_dir = out / f"{name}-{steps}"
    if (run_dir / "evaluation.json").is_file():
        logger.info("%s: reusing %s", name, run_dir)
        return run_dir
    command = [
        sys.executable,
        "-m",
        "baselines.rllib.train",
        "--algo",
        name.removeprefix("rllib-"),
        "--run-dir",
        str(run_dir),
        f"run.total_env_steps={steps}",
        *overrides,
    ]
    logger.info("running %s", " ".join(command))
    started = time.monotonic()
    subprocess.run(command, check=True)
    logger.info("%s done in %.0f s: %s", name, time.monotonic() - started, run_dir)
    return run_dir


def _config_steps(run_dir: Path) -> int | None:
    import yaml

    try:
        return yaml.safe_load((run_dir / "config.yaml").read_text())["run"]["total_env_steps"]
    except (OSError, KeyError, TypeError):
        return None


def episodes(run_dir: Path) -> dict[str, np.ndarray]:
    with open(run_dir / "episodes.csv") as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([float(r[key]) for r in rows]) for key in ("env_steps", "route_completion", "episode_return")}


def plot(curves: dict[str, dict], path: Path, window: int = 15) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, data in curves.items():
        for ax, key in zip(axes, ("route_completion", "episode_return")):
            values, steps = data[key], data["env_steps"]
            if len(values) < window:
                ax.plot(steps, values, ".", label=name)
                continue
            median = np.array([np.median(values[i - window + 1 : i + 1]) for i in range(window - 1, len(values))])
            ax.plot(steps[window - 1 :], median, lw=2, label=name)
    for ax, label in zip(axes, ("route completion (median of 15 episodes)", "episode return (median of 15)")):
        ax.set(xlabel="env steps", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training episodes on the embedded Town01")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--variants", nargs="+", default=["drqv2-plain", "drqv2-vmr", "drqv2-clip"])
    parser.add_argument("--out", default="runs/comparison")
    parser.add_argument("--rllib-overrides", nargs="*", default=[], help="for the rllib-<algo> variants")
    parser.add_argument("overrides", nargs="*", help="for Mentor's variants")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, curves = {}, {}
    for name in args.variants:
        if name.startswith("rllib-"):
            run_dir = run_rllib(name, args.steps, out, args.rllib_overrides)
        else:
            run_dir = run_variant(name, args.steps, out, args.overrides)
        curves[name] = episodes(run_dir)
        evaluation = json.loads((run_dir / "evaluation.json").read_text())
        results[name] = {"run_dir": str(run_dir), "eval": {k: evaluation["mean"].get(k) for k in TABLE_KEYS}}
    plot(curves, out / "comparison.png")
    (out / "comparison.json").write_text(json.dumps({"steps": args.steps, "results": results}, indent=1))
    print(f"{'variant':<16}" + "".join(f"{k:>26}" for k in TABLE_KEYS))
    for name, result in results.items():
        cells = [result["eval"][k] if result["eval"][k] is not None else float("nan") for k in TABLE_KEYS]
        print(f"{name:<16}" + "".join(f"{value:>26.3f}" for value in cells))


if __name__ == "__main__":
    main()
