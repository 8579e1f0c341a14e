"""Train a driving agent with foundation-model feedback.

    python train.py --config configs/quickstart.yaml [key=value ...]
    python train.py --config configs/quickstart.yaml --config configs/debug.yaml   # a seconds-long run
    python train.py --resume runs/quickstart-20261122-031500 [key=value ...]
    python train.py --config configs/chain/pretrain.yaml --run-dir runs/chain/pretrain data.dataset=...
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
import threading
from pathlib import Path

from configs.loader import ConfigError, load_config, save_config
from core import CannotStart
from envs.metrics import format_table
from runner.checkpoint import CHECKPOINT, CheckpointError, checkpoint_info, find_checkpoint
from runner.disk import MARGIN_BYTES, directory_bytes, disk_full_message, is_disk_full
from runner.loop import RunFailed, RunInterrupted, train
from runner.preflight import new_run_dir, preflight
from runner.run_dir import RunLog
from runtimes.registry import make_runtime

logger = logging.getLogger("train")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config",
        action="append",
        help="YAML experiment file (configs/*.yaml); repeat to lay overlays on top, e.g. --config configs/debug.yaml",
    )
    parser.add_argument("--resume", help="run directory to continue from its last checkpoint")
    parser.add_argument(
        "--run-dir", help="the new run's directory (default: <run.runs_dir>/<run.name>-<time>); it must not exist yet"
    )
    parser.add_argument("overrides", nargs="*", help="section.field=value, e.g. learner.batch_size=128")
    args = parser.parse_args(argv)
    if not args.config and not args.resume:
        parser.error("give --config FILE (e.g. configs/quickstart.yaml) or --resume RUN_DIR")
    if args.config and args.resume:
        parser.error("--resume takes the run's own config.yaml; give overrides instead of --config")
    if args.run_dir and args.resume:
        parser.error("--run-dir names a new run; --resume continues the one in its directory")
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
        run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(Path(config.run.runs_dir), config.run.name)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(
                f"--run-dir {run_dir} already holds files: resume it with --resume {run_dir}, or name a new directory"
            )
        checkpoint = None
    preflight(config)
    return config, run_dir, checkpoint


def quiet_disk_full_in_threads() -> None:
    """A background writer (TensorBoard's event thread) that meets a full disk says so in one line;
    the run itself stops with the full-disk message and the resume command. Other thread errors
    print as before."""
    previous = threading.excepthook
    if getattr(previous, "quiet_disk_full", False):  # main() already ran in this process
        return

    def hook(args):
        if is_disk_full(args.exc_value):
            logger.warning("%s stopped writing: %s", args.thread.name if args.thread else "a thread", args.exc_value)
            return
        previous(args)

    hook.quiet_disk_full = True
    threading.excepthook = hook


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_disk_full_in_threads()
    args = parse_args(argv)
    try:
        config, run_dir, checkpoint = prepare_run(args)
    except (ConfigError, CheckpointError) as exc:
        logger.error("%s", exc)
        return 2
    try:
        runtime = make_runtime(config, run_dir)
    except CannotStart as exc:
        logger.error("%s", exc)
        return 2
    logs: list[RunLog] = []
    try:
        return run(config, run_dir, checkpoint, runtime, logs)
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        logger.error("%s", disk_full_message(run_dir, directory_bytes(run_dir / CHECKPOINT) + MARGIN_BYTES))
        return 1
    finally:
        try:
            runtime.shutdown()
            for log in logs:
                log.close()
        except Exception as exc:  # a full disk can fail TensorBoard's last flush: that was said above
            if not is_disk_full(exc):
                raise


def run(config, run_dir: Path, checkpoint: Path | None, runtime, logs: list[RunLog]) -> int:
    """Resume (when `checkpoint`), train, evaluate; the exit status. The run's log goes into `logs` for
    the caller to close."""
    if checkpoint is not None:
        try:
            runtime.load(checkpoint)
        except (OSError, ValueError) as exc:
            if is_disk_full(exc):
                raise
            cause = getattr(exc, "cause", None) or exc  # a Ray actor's error: the learner's own message
            logger.error("cannot resume from %s: %s; nothing in %s was changed", checkpoint, cause, run_dir)
            return 2
        info = checkpoint_info(checkpoint)
        logger.info(
            "resumed from %s (written at %d env steps, %d updates): the run continues at %d env steps "
            "(%d of them from journal rows after the checkpoint), %d updates",
            checkpoint,
            info["env_steps"],
            info["updates"],
            runtime.env_steps,
            runtime.env_steps - info["env_steps"],
            runtime.updates,
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    log = RunLog(run_dir, trackers=config.run.trackers)
    logs.append(log)
    try:
        rows = train(config, log, runtime)
    except RunInterrupted as exc:
        logger.warning("%s", exc)
        return 130 if exc.signal_name == "SIGINT" else 143
    except RunFailed as exc:
        logger.error("%s", exc)
        return 1
    except CannotStart as exc:
        logger.error("%s", exc)
        return 2
    print(format_table(rows))  # the command's result, on stdout
    return 0


if __name__ == "__main__":
    sys.exit(main())
