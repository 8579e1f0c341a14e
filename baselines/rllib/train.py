"""Train one of RLlib's algorithms on Mentor's driving env, then evaluate it like Mentor's agents.

    python -m baselines.rllib.train --algo ppo                        # configs/rllib/ppo.yaml
    python -m baselines.rllib.train --algo sac run.total_env_steps=50000 rllib.sac.training.lr=1e-4
    python -m baselines.rllib.train --algo dreamerv3 --config configs/rllib/debug.yaml   # a minutes-long run
    python -m baselines.rllib.train --config runs/rllib-ppo-20261201-120000/config.yaml --run-dir runs/again

--algo NAME reads configs/rllib/NAME.yaml first; each --config lays another file on top; overrides
(`section.field=value`, `rllib.<algo>.<method>.<key>=value` for RLlib's own settings) come last.
Trains on env.town (Town01's NoCrash-like training suite) until run.total_env_steps, writes the run
directory (default <run.runs_dir>/<run.name>-<time>: config.yaml, tb/, progress.jsonl,
episodes.csv, checkpoint/, training.json, evaluation.json, learning_curve.png), evaluates the trained
policy greedily on the evaluation town's suite (Town02's nocrash_eval, eval.routes) with Mentor's
EvaluationWorker and prints the metric table. Starts a local Ray cluster unless one is connected
(run.ray_address, or $RAY_ADDRESS under `ray job submit`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from configs.loader import ConfigError

logger = logging.getLogger("rllib_train")


def parse_args(argv: list[str] | None):
    from baselines.rllib.config import ALGORITHMS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=list(ALGORITHMS), help="reads configs/rllib/<algo>.yaml first")
    parser.add_argument("--config", action="append", default=[], help="YAML file laid on top (repeatable)")
    parser.add_argument(
        "--run-dir", help="the run's directory (default: <run.runs_dir>/<run.name>-<time>); it must not hold files yet"
    )
    parser.add_argument(
        "overrides", nargs="*", help="section.field=value, e.g. run.total_env_steps=5000 or rllib.ppo.training.lr=1e-4"
    )
    args = parser.parse_args(argv)
    if not args.algo and not args.config:
        parser.error(f"give --algo ({', '.join(ALGORITHMS)}) or --config FILE (e.g. configs/rllib/ppo.yaml)")
    return args


def prepare(args):
    """The config, the RLlib settings and the run directory; checks the files and the RLlib settings the
    run needs. Writes nothing."""
    from baselines.rllib.baseline import check_algorithm_config
    from baselines.rllib.config import algorithm_config_file, load_rllib_config
    from runner.preflight import check_eval_routes, check_maps, new_run_dir

    paths = ([algorithm_config_file(args.algo)] if args.algo else []) + [Path(p) for p in args.config]
    config, settings = load_rllib_config(paths, args.overrides)
    if args.algo and settings.algorithm != args.algo:
        raise ConfigError(f"--algo {args.algo} but the configs set rllib.algorithm = {settings.algorithm}: drop one")
    check_maps(config)
    check_eval_routes(config)
    check_algorithm_config(config, settings)
    run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(Path(config.run.runs_dir), config.run.name)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"--run-dir {run_dir} already holds files: name a new directory")
    return config, settings, run_dir


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        config, settings, run_dir = prepare(args)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    from baselines.rllib.baseline import run_baseline
    from envs.metrics import format_table

    logger.info("RLlib %s on %s, run directory %s", settings.algorithm, config.env.town or "the default town", run_dir)
    try:
        result = run_baseline(config, settings, run_dir)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        logger.warning("interrupted: the checkpoint is in %s", run_dir / "checkpoint")
        return 130
    print(format_table(result["evaluation"]))  # the command's result, on stdout
    return 0


if __name__ == "__main__":
    sys.exit(main())
