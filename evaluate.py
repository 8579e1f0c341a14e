"""Evaluate a run's last checkpoint on a route suite (no exploration) and print the metric table.

    python evaluate.py runs/chain/finetune                                  # the run's own eval settings
    python evaluate.py runs/chain/pretrain --town Town01 --routes 0-9 --traffic dense
    python evaluate.py RUN_DIR --json results.json --steps steps.parquet   # the table, and every step

The run's config.yaml says the algorithm and network; --town/--suite/--traffic/--routes replace its
eval section. Nothing in the run directory is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from configs.loader import ConfigError, load_config
from drive import parse_routes

logger = logging.getLogger("evaluate")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--town", help="e.g. Town01 (default: the run's eval.town, Town02 where maps exist)")
    parser.add_argument("--suite", help="route suite (default: the town's own)")
    parser.add_argument("--traffic", choices=["empty", "regular", "dense"])
    parser.add_argument("--routes", help="route indices, e.g. 0-24 or 1,4,7 (default: the run's eval.routes)")
    parser.add_argument("--max-steps", type=int, help="per route (default: the run's eval.max_steps)")
    parser.add_argument("--json", help="also write the table here")
    parser.add_argument(
        "--steps", help="also write every step (pose, action, reward terms, infractions) as Parquet here"
    )
    args = parser.parse_args(argv)
    from envs.metrics import format_table
    from workers.acting import checkpoint_policy
    from workers.assembly import eval_env_config, make_env
    from workers.evaluation import EvaluationWorker

    run_dir = Path(args.run_dir)
    try:
        config = load_config(run_dir / "config.yaml", [])
        ev = config.eval
        ev = dataclasses.replace(
            ev,
            town=args.town or ev.town,
            route_suite=args.suite or ev.route_suite,
            traffic=args.traffic or ev.traffic,
            max_steps=args.max_steps or ev.max_steps,
            routes=tuple(parse_routes(args.routes)) if args.routes else ev.routes,
        )
        config = dataclasses.replace(config, eval=ev)
        policy = checkpoint_policy(config, str(run_dir), config.run.seed)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    env_config = eval_env_config(config)
    logger.info("evaluating %s on %s (%s traffic), routes %s", run_dir, env_config.town, ev.traffic, list(ev.routes))
    evaluator = EvaluationWorker(
        make_env(env_config, rgb_bev=False), policy, ev.routes, ev.max_steps, seed=config.run.seed
    )
    try:
        rows = evaluator.evaluate()
        steps = evaluator.step_records()
    finally:
        evaluator.close()
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.steps:
        from runner.loop import write_steps

        write_steps(Path(args.steps), steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
