"""Train a driving agent with foundation-model feedback.

    python train.py --config configs/quickstart.yaml [key=value ...]
    python train.py --config configs/quickstart.yaml --config configs/debug.yaml   # a seconds-long run
    python train.py --resume runs/quickstart-20261122-031500 [key=value ...]
    ray job submit --working-dir . -- python train.py --config configs/drqv2.yaml

Starts a local Ray cluster when none is running (`run.mode=local` runs everything in this one
process without Ray). Prints a progress line every few seconds, writes TensorBoard logs, a
progress log (JSON lines), checkpoints and, at the end, the evaluation table and a learning curve.
A resume loads the run's last complete checkpoint before anything runs or anything in the run
directory is written.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from configs.loader import ConfigError, load_config, save_config
from envs.metrics import format_table
from runner.checkpoint import CheckpointError, checkpoint_info, find_checkpoint
from runner.loop import RunFailed, RunInterrupted, train
from runner.run_dir import RunLog
from runner.runtimes import make_runtime

logger = logging.getLogger("train")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="YAML experiment file (configs/*.yaml); repeat to "
                        "lay overlays on top, e.g. --config configs/debug.yaml")
    parser.add_argument("--resume", help="run directory to continue from its last checkpoint")
    parser.add_argument("overrides", nargs="*", help="section.field=value, e.g. learner.batch_size=128")
    args = parser.parse_args(argv)
    if not args.config and not args.resume:
        parser.error("give --config FILE (e.g. configs/quickstart.yaml) or --resume RUN_DIR")
    if args.config and args.resume:
        parser.error("--resume takes the run's own config.yaml; give overrides instead of --config")
    return args


def prepare_run(args) -> tuple:
    """The config, the run directory and the checkpoint to resume (None for a new run). Writes nothing."""
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it a run directory made by train.py?")
        config = load_config(run_dir / "config.yaml", args.overrides)
        checkpoint = find_checkpoint(run_dir)
    else:
        config = load_config(args.config, args.overrides)
        run_dir = Path(config.run.runs_dir) / f"{config.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        checkpoint = None
    preflight(config)
    return config, run_dir, checkpoint


def preflight(config) -> None:
    """Files the run will need, checked before any process starts (a replica would fail minutes later)."""
    clip = config.feedback.clip
    if "clip" in config.feedback.model.split("+") and config.feedback.mode != "off" and clip.checkpoint:
        from inference.clip_model import ClipUnavailableError, check_checkpoint

        try:
            check_checkpoint(clip.checkpoint)
        except ClipUnavailableError as exc:
            raise ConfigError(f"feedback.clip.checkpoint: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        config, run_dir, checkpoint = prepare_run(args)
    except (ConfigError, CheckpointError) as exc:
        logger.error("%s", exc)
        return 2
    runtime = make_runtime(config, run_id=run_dir.name)
    log = None
    try:
        if checkpoint is not None:
            try:
                runtime.load(checkpoint)
            except (OSError, ValueError) as exc:
                logger.error("cannot resume from %s: %s; nothing in %s was changed", checkpoint, exc, run_dir)
                return 2
            info = checkpoint_info(checkpoint)
            logger.info("resumed from %s at %d env steps, %d updates", checkpoint, info["env_steps"], info["updates"])
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
        log = RunLog(run_dir)
        try:
            rows = train(config, log, runtime)
        except RunInterrupted as exc:
            logger.warning("%s", exc)
            return 130 if exc.signal_name == "SIGINT" else 143
        except RunFailed as exc:
            logger.error("%s", exc)
            return 1
        print(format_table(rows))  # the command's result, on stdout
    finally:
        runtime.shutdown()
        if log is not None:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
