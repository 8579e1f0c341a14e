"""One of RLlib's algorithms (PPO, SAC, DreamerV3) as a learning-comparison baseline: trained on Mentor's
env on Town01 for --env-steps, evaluated like every Mentor policy (EvaluationWorker, greedy) on Town02's
NoCrash-like routes; prints JSON (env steps/s, the training summary, the Town02 table).

    .venv/bin/python benchmarks/rllib_baselines.py --algo ppo --env-steps 20000 [--routes 0 1 2 3 4] \\
        [--out runs/rllib-baselines] [--config extra.yaml] [--json result.json] [overrides ...]

Runs `configs/rllib/<algo>.yaml` (the learning tables' scale) with run.total_env_steps = --env-steps
into <out>/<algo>-<env steps>/ (Mentor's run directory layout: baselines/rllib/baseline.py); a
finished run there is reused, so a comparison can run its algorithms one at a time. Overrides are
the command's (`rllib.sac.training.actor_lr=1e-4`, `rllib.device=cuda`, `env.traffic=dense`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger("benchmark")


def run(
    algorithm: str, env_steps: int, run_dir: Path, configs: list[str], overrides: list[str], evaluate: bool = True
) -> dict:
    """Train (and evaluate) one baseline into run_dir, or read a finished run there."""
    from baselines.rllib.baseline import evaluate_rllib, run_baseline, train_rllib
    from baselines.rllib.config import algorithm_config_file, load_rllib_config

    config, settings = load_rllib_config(
        [algorithm_config_file(algorithm), *configs], [f"run.total_env_steps={env_steps}", *overrides]
    )
    finished = run_dir / "training.json"
    if finished.is_file() and json.loads(finished.read_text()).get("env_steps", 0) >= env_steps:
        logger.info("reusing %s", run_dir)
        training = json.loads(finished.read_text())
        evaluation_file = run_dir / "evaluation.json"
        if evaluate and not evaluation_file.is_file():
            evaluation_file.write_text(json.dumps(evaluate_rllib(config, settings, training["checkpoint"]), indent=1))
        rows = json.loads(evaluation_file.read_text()) if evaluation_file.is_file() else None
        result = {"training": training, "evaluation": rows}
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise SystemExit(f"{run_dir} holds an unfinished run: delete it (RLlib runs here do not resume)")
    elif evaluate:
        result = run_baseline(config, settings, run_dir)
    else:
        result = {"training": train_rllib(config, settings, run_dir), "evaluation": None}
    training = result["training"]
    return {
        "algorithm": algorithm,
        "env_steps": training["env_steps"],
        "env_steps_per_s": training["env_steps_per_s"],
        "wall_time_s": training["wall_time_s"],
        "run_dir": str(run_dir),
        "setting": {
            "train_town": config.env.town,
            "traffic": config.env.traffic,
            "eval_town": config.eval.town,
            "eval_traffic": config.eval.traffic,
            "routes": list(config.eval.routes),
            "eval_max_steps": config.eval.max_steps,
            "seed": config.run.seed,
            "rllib": settings.to_yaml_dict(),
        },
        "training": training,
        "evaluation": result["evaluation"],
    }


def main(argv: list[str] | None = None) -> int:
    from baselines.rllib.config import ALGORITHMS

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", required=True, choices=list(ALGORITHMS))
    parser.add_argument("--env-steps", type=int, default=20_000, help="training budget (sampled env steps)")
    parser.add_argument("--routes", type=int, nargs="+", help="evaluation routes (default: the config's, 0-4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", action="append", default=[], help="YAML laid on the algorithm's config")
    parser.add_argument("--out", default="runs/rllib-baselines", help="runs go to <out>/<algo>-<env steps>")
    parser.add_argument("--json", help="also write the JSON here")
    parser.add_argument("overrides", nargs="*", help="section.field=value")
    args = parser.parse_args(argv)
    overrides = [
        f"run.seed={args.seed}",
        *([f"eval.routes=[{','.join(map(str, args.routes))}]"] if args.routes else []),
        *args.overrides,
    ]
    result = run(args.algo, args.env_steps, Path(args.out) / f"{args.algo}-{args.env_steps}", args.config, overrides)
    text = json.dumps(result, indent=1, default=float)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
