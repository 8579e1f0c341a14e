"""Learning benchmark at equal env steps: online from scratch, offline only, and offline-to-online,
each with and without the advisor's guidance; trained on Town01, evaluated on Town02.

    .venv/bin/python benchmarks/offline_to_online.py --steps 10000 [--out runs/offline_to_online] [overrides ...]

Every variant sees `--steps` env steps of Town01 (regular traffic):
  online            DrQ-v2 from scratch (random warm-up, then its own exploration)
  online+guidance   the same with VMR and AWAG from the expert advisor (feedback.model expert)
  offline           TD3+BC on a dataset of --steps expert steps with DART perturbations
  offline+guidance  the same, with the dataset labelled by the expert advisor (cluster/label.py) and
                    VMR + AWAG on those labels
  o2o               TD3+BC on --steps/2 dataset steps, then --steps/2 online TD3 steps from that
                    checkpoint, the dataset kept in half of every batch, no advisor
  o2o+guidance      the same with VMR + AWAG from the expert advisor online
  o2o-naive         the hand-over without the dataset in the batches and without guidance: how far the
                    value estimates fall when a pretrained critic meets its own policy's data
The runs are local mode (one process: collection and updates alternate, so every variant gets the
configured updates per env step however busy the machine is). Each evaluation drives Town02's
NoCrash routes --routes. Prints JSON; writes offline_to_online.png (Town02 driving score and route
completion per variant, and the critic's Q estimate across the hand-over) and offline_to_online.json.
A finished run in --out is reused.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger("benchmark")

COMMON = [
    "agent.network=small",
    "agent.lr=0.0003",
    "agent.control_inputs=false",
    "agent.augment_pad=0",
    "learner.batch_size=64",
    "run.progress_every_s=30",
    "eval.max_steps=2000",
    "env.town=Town01",
    "env.traffic=regular",
]
ONLINE = ["run.mode=local", "workers.num_workers=1", "learner.samples_per_insert=4", "learner.replay_capacity=30000"]
GUIDED = [
    "feedback.model=expert",
    "feedback.mode=async",
    "feedback.wanted=[vlm_action]",
    "agent.guidance.vmr_weight=0.1",
    "agent.guidance.awag_weight=0.03",
    "agent.guidance.awag_schedule=constant",
]
UNGUIDED = ["feedback.mode=off", "agent.guidance.vmr_weight=0", "agent.guidance.awag_weight=0"]


def run(command: list[str], done: Path | None = None) -> None:
    """Run a command unless `done` exists (collection and labelling resume by themselves)."""
    if done is not None and done.exists():
        logger.info("reusing %s", done.parent)
        return
    logger.info("running %s", " ".join(command))
    started = time.monotonic()
    subprocess.run([sys.executable, *command], check=True)
    logger.info("finished in %.0f s", time.monotonic() - started)


def train(out: Path, name: str, config: str, overrides: list[str]) -> Path:
    run_dir = out / name
    if run_dir.exists() and not (run_dir / "evaluation.json").exists():
        raise SystemExit(f"{run_dir} holds an unfinished run: delete it or resume it with train.py --resume")
    run(["train.py", "--config", config, "--run-dir", str(run_dir), *overrides], run_dir / "evaluation.json")
    return run_dir


def collect(out: Path, name: str, steps: int, overrides: list[str]) -> Path:
    directory = out / name
    run(
        [
            "collect.py",
            "--config",
            "configs/collect/expert.yaml",
            f"collect.output={directory}",
            "run.mode=local",
            "workers.num_workers=1",
            f"run.total_env_steps={steps}",
            "env.town=Town01",
            "env.traffic=regular",
            *overrides,
        ]
    )
    return directory


def label(directory: Path) -> None:
    run(["-m", "cluster.label", str(directory), "--model", "expert", "--ray-address", "local"])


def q_curve(run_dir: Path) -> list[tuple[float, float]]:
    rows = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    return [(r["learner_updates"], r["loss/q_mean"]) for r in rows if "loss/q_mean" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000, help="env steps per variant")
    parser.add_argument("--pretrain-updates", type=int, default=1500)
    parser.add_argument("--routes", default="[0,1,2,3,4]", help="Town02 evaluation routes")
    parser.add_argument("--out", default="runs/offline_to_online")
    parser.add_argument("overrides", nargs="*", help="given to every run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [*COMMON, f"eval.routes={args.routes}", *args.overrides]
    steps, half = args.steps, args.steps // 2
    full = collect(out, "data-full", steps, args.overrides)
    part = collect(out, "data-half", half, args.overrides)
    label(full)
    label(part)
    quick = "configs/quickstart.yaml"
    pretrain = [
        "run.mode=offline",
        "run.total_env_steps=0",
        f"run.total_updates={args.pretrain_updates}",
        "agent.algorithm=td3bc",
        "learner.publish_every_updates=100",
    ]
    runs = {
        "online": train(
            out,
            "online",
            quick,
            [*common, *ONLINE, *UNGUIDED, f"run.total_env_steps={steps}", f"agent.drqv2.std_steps={steps}"],
        ),
        "online+guidance": train(
            out,
            "online-guided",
            quick,
            [*common, *ONLINE, *GUIDED, f"run.total_env_steps={steps}", f"agent.drqv2.std_steps={steps}"],
        ),
        "offline": train(out, "offline", quick, [*common, *pretrain, *UNGUIDED, f"data.dataset={full}"]),
        "offline+guidance": train(
            out, "offline-guided", quick, [*common, *pretrain, *GUIDED, "feedback.mode=off", f"data.dataset={full}"]
        ),
    }
    base = train(out, "pretrain-half", quick, [*common, *pretrain, *UNGUIDED, f"data.dataset={part}"])
    fine = [
        *common,
        *ONLINE,
        "agent.algorithm=td3",
        f"agent.init_from={base}",
        f"data.dataset={part}",
        f"run.total_env_steps={half}",
        "workers.random_steps=0",
        "learner.learning_starts=0",
    ]
    runs["o2o"] = train(out, "o2o", quick, [*fine, *UNGUIDED, "data.offline_fraction=0.5"])
    runs["o2o+guidance"] = train(out, "o2o-guided", quick, [*fine, *GUIDED, "data.offline_fraction=0.5"])
    runs["o2o-naive"] = train(out, "o2o-naive", quick, [*fine, *UNGUIDED, "data.offline_fraction=0"])
    results = {}
    for name, run_dir in runs.items():
        mean = json.loads((run_dir / "evaluation.json").read_text())["mean"]
        results[name] = {
            "run_dir": str(run_dir),
            **{k: mean[k] for k in ("driving_score", "route_completion", "infraction_penalty", "mean_speed")},
        }
    pretrained_q = q_curve(base)[-1][1]
    handover = {}
    for name in ("o2o", "o2o+guidance", "o2o-naive"):
        curve = q_curve(runs[name])
        handover[name] = {
            "q_after_pretraining": pretrained_q,
            "q_min_online": min(q for _, q in curve),
            "q_end_online": curve[-1][1],
            "curve": curve,
        }
    report = {
        "steps": steps,
        "pretrain_updates": args.pretrain_updates,
        "routes": args.routes,
        "results": results,
        "handover": {k: {kk: vv for kk, vv in v.items() if kk != "curve"} for k, v in handover.items()},
    }
    (out / "offline_to_online.json").write_text(json.dumps(report | {"curves": handover}, indent=1))
    plot(results, handover, out / "offline_to_online.png")
    print(json.dumps(report, indent=1))


def plot(results: dict, handover: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, curves) = plt.subplots(1, 2, figsize=(13, 4.5))
    names = list(results)
    x = range(len(names))
    bars.bar([i - 0.2 for i in x], [results[n]["driving_score"] for n in names], width=0.4, label="driving score")
    bars.bar([i + 0.2 for i in x], [results[n]["route_completion"] for n in names], width=0.4, label="route completion")
    bars.set_xticks(list(x), names, rotation=25, ha="right")
    bars.set(title="Town02 evaluation (trained on Town01)", ylim=(0, 1))
    bars.legend()
    for name, data in handover.items():
        curves.plot([u for u, _ in data["curve"]], [q for _, q in data["curve"]], label=name)
    curves.axhline(
        next(iter(handover.values()))["q_after_pretraining"], color="k", ls="--", lw=1, label="after pretraining"
    )
    curves.set(title="critic Q estimate after the hand-over", xlabel="online updates", ylabel="mean Q(s, a)")
    curves.grid(alpha=0.3)
    curves.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
