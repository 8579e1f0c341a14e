"""Checkpoints that are complete or absent.

A checkpoint is written into `checkpoint.partial/`, finished with a `COMPLETE` marker (what it
holds: env steps, updates, time), and only then renamed to `checkpoint/`, the previous one moved
aside first and deleted last. A crash at any moment leaves either the old checkpoint or the new
one: `find_checkpoint` takes `checkpoint/` when it is complete, else the one set aside.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

logger = logging.getLogger(__name__)

CHECKPOINT, PARTIAL, PREVIOUS = "checkpoint", "checkpoint.partial", "checkpoint.previous"
COMPLETE = "COMPLETE"


class CheckpointError(RuntimeError):
    """A run directory has no checkpoint that can be resumed; the message says which and why."""


def write_checkpoint(run_dir: Path, runtime) -> Path:
    """Save the runtime's complete state and publish it atomically as run_dir/checkpoint."""
    run_dir = Path(run_dir)
    partial, final, previous = run_dir / PARTIAL, run_dir / CHECKPOINT, run_dir / PREVIOUS
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        runtime.save(partial)
        marker = {"env_steps": runtime.env_steps, "updates": runtime.updates, "written": time.time()}
        _write_synced(partial / COMPLETE, json.dumps(marker))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # half a checkpoint is of no use and takes the space
        raise
    if final.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(final, previous)
    os.replace(partial, final)
    shutil.rmtree(previous, ignore_errors=True)
    logger.info("checkpoint at %d env steps, %d updates: %s", marker["env_steps"], marker["updates"], final)
    return final


def find_checkpoint(run_dir: Path) -> Path:
    """The run's last complete checkpoint; CheckpointError naming the run directory otherwise."""
    run_dir = Path(run_dir)
    for name in (CHECKPOINT, PREVIOUS):  # previous: a crash between the two renames
        if (run_dir / name / COMPLETE).is_file():
            return run_dir / name
    found = [name for name in (CHECKPOINT, PREVIOUS, PARTIAL) if (run_dir / name).exists()]
    detail = (
        f"{', '.join(found)} exist(s) but none was completed (no {COMPLETE} marker: the run stopped while writing it)"
        if found
        else "the run stopped before its first checkpoint"
    )
    raise CheckpointError(
        f"{run_dir} has no complete checkpoint to resume: {detail}. Start a new run with "
        "--config instead; nothing in this run directory was changed"
    )


def checkpoint_info(path: Path) -> dict:
    return json.loads((Path(path) / COMPLETE).read_text())


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
