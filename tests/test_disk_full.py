"""A full disk under a run directory: the run stops with a checkpoint while one still fits, or says
"no space left on <device> for <run dir>" with the bytes needed and the resume command when a write
failed anyway; either way the resume afterwards has every row."""

import errno
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

import train
from runner import disk
from runner.checkpoint import COMPLETE
from tests.train_process import start_train, wait_for_stored_rows


def test_disk_full_errors_are_recognised_through_their_causes():
    assert disk.is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert disk.is_disk_full(RuntimeError("basic_ios::clear: iostream error"))  # torch.save's C++ stream
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("the learner failed") from inner
    except RuntimeError as outer:
        assert disk.is_disk_full(outer)
    assert not disk.is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not disk.is_disk_full(ValueError("a damaged segment"))


def test_the_message_names_the_device_the_run_the_bytes_and_the_resume(tmp_path):
    run_dir = tmp_path / "runs" / "quickstart-1"  # not made yet: its closest parent is measured
    device, point = disk.mount_of(run_dir)
    message = disk.disk_full_message(run_dir, needed=3 << 20, free=1 << 20)
    assert message.startswith(f"no space left on {device} (mounted at {point}) for {run_dir}")
    assert "3,145,728 bytes" in message and f"train.py --resume {run_dir}" in message
    assert str(tmp_path).startswith(point)


def test_the_guard_asks_for_a_checkpoint_and_a_margin(tmp_path, monkeypatch):
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "agent.pt").write_bytes(b"x" * 1000)
    guard = disk.DiskGuard(tmp_path)
    guard.measure_checkpoint(checkpoint)
    assert guard.needed == 1000 + disk.MARGIN_BYTES
    monkeypatch.setattr(disk, "free_bytes", lambda path: guard.needed)
    assert guard.short() is None
    monkeypatch.setattr(disk, "free_bytes", lambda path: guard.needed - 1)
    assert "no space left on" in str(guard.short())


def local_args(runs, *extra):
    return [
        "--config",
        "configs/quickstart.yaml",
        "--config",
        "configs/debug.yaml",
        "run.mode=local",
        "workers.num_workers=1",
        f"run.runs_dir={runs}",
        "run.progress_every_s=1",
        *extra,
    ]


@pytest.mark.sim
def test_a_disk_running_out_stops_the_run_with_a_checkpoint_and_the_resume_has_every_row(tmp_path, monkeypatch, caplog):
    looks = {"n": 0}
    real_free = disk.free_bytes

    def free_bytes(path):  # the disk "fills" at the guard's 30th look
        looks["n"] += 1
        return 1 << 20 if looks["n"] >= 30 else real_free(path)

    monkeypatch.setattr(disk, "free_bytes", free_bytes)
    assert train.main(local_args(tmp_path, "run.total_env_steps=100000")) == 1
    (run_dir,) = tmp_path.glob("quickstart-*")
    assert "no space left on" in caplog.text and f"train.py --resume {run_dir}" in caplog.text
    saved = json.loads((run_dir / "checkpoint" / COMPLETE).read_text())
    stored = json.loads((run_dir / "progress.jsonl").read_text().strip().splitlines()[-1])["replay_inserted_total"]
    assert saved["env_steps"] > 0
    monkeypatch.setattr(disk, "free_bytes", real_free)  # space was freed
    assert train.main(["--resume", str(run_dir), "run.total_env_steps=1"]) == 0
    resumed = json.loads((run_dir / "progress.jsonl").read_text().strip().splitlines()[-1])
    assert resumed["replay_inserted_total"] >= stored


def _small_tmpfs(path: Path, size_mib: int) -> bool:
    """Mount a tmpfs of `size_mib` at `path`; False where this machine does not allow it (not root,
    no CAP_SYS_ADMIN, no mount binary)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", f"mentor-{uuid.uuid4().hex[:8]}", str(path)],
        capture_output=True,
    )
    return done.returncode == 0


@pytest.mark.sim
def test_a_disk_filled_from_outside_ends_the_run_with_the_message_and_the_resume_has_every_row(tmp_path):
    """A real full disk: a small tmpfs under the run directory, filled by another file while the run
    collects. Skips where the machine does not allow mounting one."""
    mount = tmp_path / "small"
    if not _small_tmpfs(mount, 96):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        process = start_train(local_args(mount, "run.total_env_steps=100000"))
        progress = wait_for_stored_rows(process, mount, 300)
        filler = mount / "filler"
        with open(filler, "wb") as f:  # take every byte that is left
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        output = process.communicate(timeout=120)[0]
        run_dir = progress.parent
        assert process.returncode == 1, output[-3000:]
        assert "no space left on" in output and f"train.py --resume {run_dir}" in output, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        stored = json.loads(progress.read_text().strip().splitlines()[-1])["replay_inserted_total"]
        filler.unlink()
        assert train.main(["--resume", str(run_dir), "run.total_env_steps=1"]) == 0
        resumed = json.loads(progress.read_text().strip().splitlines()[-1])
        assert resumed["replay_inserted_total"] >= stored
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
