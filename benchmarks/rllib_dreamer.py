"""RLlib's own DreamerV3 as a baseline: trained online on the Town01 train routes (the env Mentor's
agents drive), then evaluated like every Mentor policy (EvaluationWorker, no exploration) on the
evaluation town's suite; prints the training summary and the metric table as JSON.

    .venv/bin/python benchmarks/rllib_dreamer.py --town Town01 --env-steps 100000 --model-size XS \\
        --eval-town Town02 --routes 0 1 2 3 4 --out runs/rllib-dreamer --json

The DreamerV3 run of benchmarks/rllib_baselines.py (configs/rllib/dreamerv3.yaml) with its settings as
flags; --out is the run directory (Mentor's layout), reused when it holds a finished run of at least
--env-steps. The image DreamerV3 sees, why, and what RLlib's DreamerV3 cannot take:
baselines/rllib/dreamerv3.py. On a 2-core CPU, XS at the default training ratio (64) learns a few env
steps per second; --training-ratio trades learning per sample against speed (RLlib's own default is
1024). Needs the CARLA maps ($MENTOR_MAPS_DIR) for Town01/Town02; `--town Generated --eval-town
Generated` runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rllib_baselines import run


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--town", default="Town01", help="training town (its own route suite)")
    parser.add_argument("--traffic", default="regular", choices=["empty", "regular", "dense"])
    parser.add_argument("--env-steps", type=int, default=2000, help="training budget (sampled env steps)")
    parser.add_argument("--model-size", default="XS", help="nano, micro, mini, XXS, XS, S, M, L, XL")
    parser.add_argument("--training-ratio", type=float, default=64.0, help="replayed steps per env step")
    parser.add_argument("--batch-size-b", type=int, default=16)
    parser.add_argument("--batch-length-t", type=int, default=64)
    parser.add_argument("--eval-town", default="Town02")
    parser.add_argument("--eval-traffic", default="regular", choices=["empty", "regular", "dense"])
    parser.add_argument("--routes", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--eval-max-steps", type=int, default=2000, help="per route")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", action="append", default=[], help="YAML laid on configs/rllib/dreamerv3.yaml")
    parser.add_argument("--out", default="runs/rllib-dreamer", help="the run directory")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument(
        "--json",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="print only the JSON on stdout (logs on stderr); with PATH also write it there",
    )
    args = parser.parse_args(argv)

    training = "rllib.dreamerv3.training"
    overrides = [
        f"env.town={args.town}",
        f"env.traffic={args.traffic}",
        f"run.seed={args.seed}",
        f"eval.town={args.eval_town}",
        f"eval.traffic={args.eval_traffic}",
        f"eval.routes=[{','.join(map(str, args.routes))}]",
        f"eval.max_steps={args.eval_max_steps}",
        f"{training}.model_size={args.model_size}",
        f"{training}.training_ratio={args.training_ratio}",
        f"{training}.batch_size_B={args.batch_size_b}",
        f"{training}.batch_length_T={args.batch_length_t}",
    ]
    out = Path(args.out)
    result = run("dreamerv3", args.env_steps, out, args.config, overrides, evaluate=not args.skip_eval)
    text = json.dumps(result, indent=1, default=float)
    (out / "results.json").write_text(text)
    if args.json:
        Path(args.json).write_text(text)
    if args.json is not None:
        print(text)
    else:
        print(json.dumps((result["evaluation"] or {}).get("mean", result["training"]), indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
