"""VL-SAFE against its baselines at equal data: trained on Town01, evaluated on Town02 (prints JSON).

    .venv/bin/python benchmarks/vlsafe_comparison.py --dataset runs/datasets/town01-expert-safety \
        [--wm-updates 400] [--updates 1500] [--rllib-env-steps N] [--out runs/vlsafe_comparison] [overrides ...]

Every offline variant learns from the same CLIP-labelled dataset (configs/collect/expert-safety.yaml,
then `python -m cluster.label DIR --model clip`):
  vlsafe            the world model + safety-weighted actor-critic (configs/vlsafe/offline.yaml)
  vlsafe-unweighted its twin with the safety weighting off (p = 1: reward-weighted only)
  vlsafe-lagrangian SafeDreamer's augmented Lagrangian instead of the weighting (--lagrangian)
  bc, td3bc, iql    the offline actor-critic baselines (configs/chain/pretrain.yaml settings)
  rllib-dreamerv3   RLlib's own DreamerV3, online on Town01 for as many env steps as the dataset holds
                    (--rllib-env-steps; baselines/rllib/dreamerv3.py), when asked for
Each evaluation drives Town02's NoCrash routes --routes (regular traffic) and reports the driving
metrics with VL-SAFE's safety metrics. The safety-label audit (dataset/audit.py) scores the CLIP label
and the world model's predicted safety on the dataset's held-out episodes. Writes
vlsafe_comparison.json and vlsafe_comparison.png into --out; a finished run there is reused.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

from offline_to_online import run, train

logger = logging.getLogger("benchmark")

WORLD_MODEL = "configs/vlsafe/offline.yaml"
BASELINE = "configs/chain/pretrain.yaml"
KEYS = (
    "driving_score",
    "route_completion",
    "infraction_penalty",
    "cost",
    "collision_rate",
    "collisions_per_km",
    "collisions_per_min",
    "collision_speed_kmh",
    "mean_speed",
    "distance_m",
)


def summary(run_dir: Path) -> dict:
    mean = json.loads((run_dir / "evaluation.json").read_text())["mean"]
    return {"run_dir": str(run_dir), **{key: mean.get(key) for key in KEYS}}


def audit(dataset: str, run_dir: Path, out: Path) -> dict:
    done = out / "audit.json"
    if not done.exists():
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "dataset.audit",
                dataset,
                "--predicted",
                str(run_dir),
                "--json",
                "--png",
                str(out / "audit.png"),
            ],
            capture_output=True,
            text=True,
        )
        if completed.returncode not in (0, 1):  # 1: no infraction in the held-out episodes (said in the JSON)
            raise SystemExit(f"the audit failed: {completed.stderr[-2000:]}")
        done.write_text(completed.stdout)
    return json.loads(done.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a CLIP-labelled transition dataset of Town01")
    parser.add_argument("--wm-updates", type=int, default=400, help="world-model updates (8 x 32 sequences)")
    parser.add_argument("--updates", type=int, default=1500, help="baseline updates (64 transitions)")
    parser.add_argument("--routes", default="[0,1,2,3,4]", help="Town02 evaluation routes")
    parser.add_argument("--lagrangian", action="store_true", help="also the SafeDreamer-Lagrangian variant")
    parser.add_argument("--rllib-env-steps", type=int, default=0, help="RLlib DreamerV3 online steps (0: skip)")
    parser.add_argument("--out", default="runs/vlsafe_comparison")
    parser.add_argument("overrides", nargs="*", help="given to every Mentor run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [
        f"data.dataset={args.dataset}",
        f"eval.routes={args.routes}",
        "eval.traffic=regular",
        "eval.max_steps=1500",
        "run.progress_every_s=30",
        "learner.torch_threads=1",
        *args.overrides,
    ]
    world_model = [*common, f"run.total_updates={args.wm_updates}"]
    variants = {"vlsafe": "vlsafe", "vlsafe-unweighted": "none"} | (
        {"vlsafe-lagrangian": "lagrangian"} if args.lagrangian else {}
    )
    runs = {
        name: train(out, name, WORLD_MODEL, [*world_model, f"agent.vlsafe.safety_weighting={weighting}"])
        for name, weighting in variants.items()
    }
    for algorithm in ("bc", "td3bc", "iql"):
        runs[algorithm] = train(
            out, algorithm, BASELINE, [*common, f"agent.algorithm={algorithm}", f"run.total_updates={args.updates}"]
        )
    results = {name: summary(run_dir) for name, run_dir in runs.items()}
    if args.rllib_env_steps:
        rllib = out / "rllib-dreamerv3"
        run(
            [
                "benchmarks/rllib_dreamer.py",
                "--town",
                "Town01",
                "--env-steps",
                str(args.rllib_env_steps),
                "--eval-town",
                "Town02",
                "--routes",
                *args.routes.strip("[]").split(","),
                "--out",
                str(rllib),
                "--json",
                str(rllib / "result.json"),
            ],
            rllib / "result.json",
        )
        results["rllib-dreamerv3"] = json.loads((rllib / "result.json").read_text())
    report = {
        "dataset": args.dataset,
        "wm_updates": args.wm_updates,
        "updates": args.updates,
        "routes": args.routes,
        "results": results,
        "audit": audit(args.dataset, runs["vlsafe"], out),
    }
    (out / "vlsafe_comparison.json").write_text(json.dumps(report, indent=1))
    plot(results, out / "vlsafe_comparison.png")
    print(json.dumps(report, indent=1))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    x = list(range(len(names)))
    fig, (score, safety) = plt.subplots(1, 2, figsize=(13, 4.5))
    for offset, key in ((-0.2, "driving_score"), (0.2, "route_completion")):
        score.bar([i + offset for i in x], [results[n].get(key) or 0.0 for n in names], width=0.4, label=key)
    score.set_xticks(x, names, rotation=25, ha="right")
    score.set(title="Town02 (trained on Town01 data)", ylim=(0, 1))
    score.legend()
    safety.bar(x, [results[n].get("collisions_per_km") or 0.0 for n in names], color="tab:red")
    safety.set_xticks(x, names, rotation=25, ha="right")
    safety.set(title="collisions per km (lower is safer)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
