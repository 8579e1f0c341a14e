"""Train a driving agent with foundation-model feedback.

    python train.py --config configs/quickstart.yaml [key=value ...]
    python train.py --resume runs/quickstart-20261122-031500 [key=value ...]
    ray job submit --working-dir . -- python train.py --config configs/drqv2.yaml

Starts a local Ray cluster when none is running (`run.local=true` runs everything in this one
process without Ray). Prints a progress line every few seconds, writes TensorBoard logs, a
progress log (JSON lines), checkpoints and, at the end, the evaluation table and a learning curve.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from configs.loader import ConfigError, load_config, save_config
from envs.metrics import format_table
from learners.run_log import RunLog, plot_learning_curve

logger = logging.getLogger("train")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML experiment file (configs/*.yaml)")
    parser.add_argument("--resume", help="run directory to continue from its last checkpoint")
    parser.add_argument("overrides", nargs="*", help="section.field=value, e.g. learner.batch_size=128")
    args = parser.parse_args(argv)
    if not args.config and not args.resume:
        parser.error("give --config FILE (e.g. configs/quickstart.yaml) or --resume RUN_DIR")
    return args


def prepare_run(args) -> tuple:
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it a run directory made by train.py?")
        config = load_config(run_dir / "config.yaml", args.overrides)
    else:
        config = load_config(args.config, args.overrides)
        run_dir = Path(config.run.runs_dir) / f"{config.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    preflight(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    return config, RunLog(run_dir)


def preflight(config) -> None:
    """Files the run will need, checked before any process starts (a replica would fail minutes later)."""
    clip = config.feedback.clip
    if "clip" in config.feedback.model.split("+") and config.feedback.mode != "off" and clip.checkpoint:
        from inference.clip_model import ClipUnavailableError, check_checkpoint

        try:
            check_checkpoint(clip.checkpoint)
        except ClipUnavailableError as exc:
            raise ConfigError(f"feedback.clip.checkpoint: {exc}") from exc


def start_runtime(config):
    if config.run.local:
        from actors.local_runtime import LocalRuntime

        return LocalRuntime(config)
    from cluster.launch import launch  # the only package that imports ray

    return launch(config)


def train(config, log: RunLog, runtime) -> dict:
    """The loop: collect and learn until the step budget is spent, then evaluate."""
    started, last_checkpoint = time.monotonic(), 0
    total = config.run.total_env_steps
    while runtime.env_steps < total:
        report = runtime.step()
        log.scalars(report, runtime.env_steps)
        log.episodes(runtime.new_episodes(), runtime.env_steps)
        log.progress_line(_progress_text(report, total, started), config.run.progress_every_s)
        if report["learner_updates"] - last_checkpoint >= config.learner.checkpoint_every_updates:
            runtime.save(log.checkpoint_dir)
            last_checkpoint = report["learner_updates"]
        if config.run.time_limit_s and time.monotonic() - started > config.run.time_limit_s:
            logger.info("time limit of %.0f s reached at %d env steps", config.run.time_limit_s, runtime.env_steps)
            break
    runtime.save(log.checkpoint_dir)
    rows = runtime.evaluate()
    log.write_json("evaluation.json", rows)
    curve = plot_learning_curve(log.dir)
    print(format_table(rows))
    logger.info("run directory: %s%s", log.dir, f" (learning curve: {curve.name})" if curve else "")
    return rows


def _progress_text(report: dict, total: int, started: float) -> str:
    elapsed = time.monotonic() - started
    steps = report["env_steps"]
    return (f"env steps {steps:.0f}/{total} ({steps / max(elapsed, 1e-6):.0f}/s) | updates "
            f"{report['learner_updates']:.0f} | replay {report['replay_size']:.0f} | policy v{report['policy_version']:.0f}"
            f" lag {report['policy_lag']:.1f} | feedback avail {report.get('feedback/availability', 1.0):.3f}"
            f" pending {report.get('feedback/pending', 0):.0f} | return(ep) {report.get('episode_return', float('nan')):.1f}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        config, log = prepare_run(args)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    runtime = start_runtime(config)
    try:
        if args.resume and (log.checkpoint_dir / "learner.json").exists():
            runtime.load(log.checkpoint_dir)
            logger.info("resumed from %s at %d env steps", log.checkpoint_dir, runtime.env_steps)
        train(config, log, runtime)
    finally:
        runtime.shutdown()
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
