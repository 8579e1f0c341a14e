"""`ray job submit` against `ray start --head`, the way users run Mentor on a cluster."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_node(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard = free_port(), free_port()
    subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={gcs}", f"--dashboard-port={dashboard}",
                    "--num-cpus=6", "--include-dashboard=true", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True, timeout=120)
    try:
        yield env, f"http://127.0.0.1:{dashboard}"
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.mark.slow
def test_ray_job_submit_runs_train_py(head_node, tmp_path):
    env, address = head_node
    result = subprocess.run(
        [str(BIN / "ray"), "job", "submit", f"--address={address}", "--working-dir", str(ROOT), "--",
         "python", "train.py", "--config", "configs/quickstart.yaml", "--config", "configs/debug.yaml",
         "run.total_env_steps=600", "learner.batch_size=16", "eval.max_steps=100", f"run.runs_dir={tmp_path}"],
        env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "succeeded" in output and "driving_score" in output
    assert list(tmp_path.glob("quickstart-*/checkpoint/agent.pt"))
