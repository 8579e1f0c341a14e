"""`train.py` as a user runs it, in a process of its own, for the tests that kill or starve it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def start_train(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "train.py", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_stored_rows(process: subprocess.Popen, runs: Path, rows: int, timeout_s: float = 180) -> Path:
    """The run's progress.jsonl, once its last line says the learner stored more than `rows` rows; fails
    the test with the run's output if the process ends or the time runs out first."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0][-3000:]
        time.sleep(0.5)
        progress = next(runs.glob("quickstart-*/progress.jsonl"), None)
        lines = progress.read_text().strip().splitlines() if progress else []
        if lines and json.loads(lines[-1])["replay_inserted_total"] > rows:
            return progress
