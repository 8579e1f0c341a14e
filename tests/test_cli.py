"""The main job and the benchmark as a user runs them (subprocesses: each owns its simulation)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.sim

ROOT = Path(__file__).resolve().parents[1]


def run(*args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_drive_prints_the_metric_table_and_writes_a_gif(tmp_path):
    gif, table = tmp_path / "expert.gif", tmp_path / "metrics.json"
    result = run(
        "drive.py",
        "--town",
        "Generated",
        "--traffic",
        "regular",
        "--routes",
        "1",
        "--gif",
        str(gif),
        "--json",
        str(table),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "driving_score" in result.stdout and "mean (Generated, regular)" in result.stdout
    rows = json.loads(table.read_text())
    assert 0.0 <= rows["route 1"]["route_completion"] <= 1.0
    with Image.open(gif) as image:
        assert image.n_frames > 50 and image.size == (384, 384)


def test_env_benchmark_prints_json():
    result = run("benchmarks/env_steps.py", "--town", "Generated", "--steps", "100")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["with_bev"]["env_steps_per_s"] > 0 and report["without_bev"]["env_steps_per_s"] > 0
