"""Disk space for a run directory: stop before the disk is full, and say so when it filled anyway.

A run writes three things as it goes: the replay journal (about 1.6 KB per row, on the learner's
node), checkpoints (the agent and its optimisers, written beside the last complete one before that
is replaced) and its logs. The loop stops the run, with a checkpoint, while a checkpoint still fits
(`DiskGuard`), rather than letting a write fail half way. When the disk fills anyway (another
process took the space), the error is recognised (`is_disk_full`) and told as "no space left on
<device> for <run dir>", with the bytes needed and the resume command, instead of a traceback; the
last complete checkpoint and the journal are intact either way (both are written to temporary names
and renamed).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

# Room kept for what is written besides a checkpoint until the loop's next look (progress.jsonl,
# TensorBoard, episodes.csv, journal segments of a few seconds of rows: ~1.6 KB a row): 64 MiB.
MARGIN_BYTES = 64 << 20
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# What C++ writers (torch.save, TensorBoard's event writer) say instead of an errno when a write fails.
_STREAM_FAILURES = ("iostream error", "No space left on device", "file write failed", "PytorchStreamWriter failed")


class DiskFull(RuntimeError):
    """The run directory's disk cannot take what the run must write; the message says where, how many
    bytes are needed and how to resume."""


def mount_of(path: Path) -> tuple[str, str]:
    """(device, mount point) of the file system holding `path` (from /proc/mounts; ("?", "/") elsewhere)."""
    target = os.path.realpath(_existing(path))
    best = ("?", "/")
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, point = line.split()[:2]
                point = point.replace("\\040", " ")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best[1]):
                    best = (device, point)
    except OSError:
        pass
    return best


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(_existing(path)).free


def directory_bytes(path: Path) -> int:
    """Bytes of the files under `path` (0 when it does not exist)."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _existing(path: Path) -> Path:
    """`path` or its closest existing parent (a run directory may not be made yet)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_full_message(run_dir: Path, needed: int, free: int | None = None) -> str:
    device, point = mount_of(run_dir)
    free = free_bytes(run_dir) if free is None else free
    return (
        f"no space left on {device} (mounted at {point}) for {run_dir}: {_mib(free)} free, the run needs "
        f"{_mib(needed)} to write its checkpoint and go on. The last complete checkpoint and the replay journal "
        f"are intact: free space on {point}, then continue with train.py --resume {run_dir}"
    )


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or anything it was raised from, Ray's wrapped task errors included) is a write
    that failed for want of space."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(exc) for text in _STREAM_FAILURES):
            return True
        cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError keeps the task's exception here
        exc = cause if isinstance(cause, BaseException) else (exc.__cause__ or exc.__context__)
    return False


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB ({n:,} bytes)"


class DiskGuard:
    """Whether the run directory's disk still holds a checkpoint plus MARGIN_BYTES. The checkpoint's
    size is the last complete one's (a new run writes its first before it collects anything)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.checkpoint_bytes = 0

    def measure_checkpoint(self, checkpoint: Path) -> None:
        self.checkpoint_bytes = directory_bytes(checkpoint)

    @property
    def needed(self) -> int:
        return self.checkpoint_bytes + MARGIN_BYTES

    def short(self) -> DiskFull | None:
        """DiskFull (not raised) when the free space is below what the run needs, else None."""
        free = free_bytes(self.run_dir)
        return DiskFull(disk_full_message(self.run_dir, self.needed, free)) if free < self.needed else None
