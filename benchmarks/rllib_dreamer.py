"""RLlib's own DreamerV3 as a baseline: trained online on the Town01 train routes (the env Mentor's
agents drive), then evaluated like every Mentor policy (EvaluationWorker, no exploration) on the
evaluation town's suite; prints the training summary and the metric table as JSON.

    .venv/bin/python benchmarks/rllib_dreamer.py --town Town01 --env-steps 100000 --model-size XS \\
        --eval-town Town02 --routes 0 1 2 3 4 --out runs/rllib-dreamer --json

The image DreamerV3 sees, why, and what RLlib's DreamerV3 cannot take: cluster/rllib_dreamer.py.
On a 2-core CPU, XS at the default training ratio (64) learns a few env steps per second;
--training-ratio trades learning per sample against speed (RLlib's own default is 1024).
Needs the CARLA maps ($MENTOR_MAPS_DIR) for Town01/Town02; `--town Generated --eval-town Generated`
runs anywhere.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from configs.loader import load_config


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
    parser.add_argument("--config", action="append", default=[], help="YAML configs under the overrides (repeatable)")
    parser.add_argument("--out", default="runs/rllib-dreamer", help="the RLlib checkpoint and results go here")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--json", action="store_true", help="print only the JSON on stdout (logs on stderr)")
    args = parser.parse_args(argv)

    from cluster.rllib_dreamer import evaluate_dreamer, train_dreamer

    config = load_config(args.config or None, [
        f"env.town={args.town}", f"env.traffic={args.traffic}", f"run.seed={args.seed}", f"eval.town={args.eval_town}",
        f"eval.traffic={args.eval_traffic}", f"eval.routes=[{','.join(map(str, args.routes))}]",
        f"eval.max_steps={args.eval_max_steps}"])
    out = Path(args.out)
    training = train_dreamer(config, args.env_steps, out, model_size=args.model_size,
                             training_ratio=args.training_ratio, batch_size_B=args.batch_size_b,
                             batch_length_T=args.batch_length_t)
    results = {"setting": {"town": args.town, "traffic": args.traffic, "env_steps": args.env_steps,
                           "model_size": args.model_size, "training_ratio": args.training_ratio,
                           "batch_size_B": args.batch_size_b, "batch_length_T": args.batch_length_t,
                           "eval_town": args.eval_town, "eval_traffic": args.eval_traffic, "routes": args.routes,
                           "eval_max_steps": args.eval_max_steps, "seed": args.seed},
               "training": training}
    if not args.skip_eval:
        results["evaluation"] = evaluate_dreamer(config, training["checkpoint"], town=args.eval_town,
                                                 routes=tuple(args.routes), traffic=args.eval_traffic,
                                                 max_steps=args.eval_max_steps)
    text = json.dumps(results, indent=1, default=float)
    (out / "results.json").write_text(text)
    if args.json:
        print(text)
    else:
        print(json.dumps(results.get("evaluation", {}).get("mean", training), indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
