"""`ray job submit` against `ray start --head`, with the README's commands as written (Ray 2.60's
token authentication on, as it is by default once a token exists)."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AGENT_WAIT_S = 120.0  # how long a new head's job agent may take to come up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_node(tmp_path, cpus: int):
    # The README: export RAY_AUTH_MODE=token; ray get-auth-token --generate; ray start --head --num-cpus=N.
    # HOME is the test's own, so the token file (~/.ray/auth_token) is too; so is the head's temp
    # directory (short: Ray's socket paths must fit 107 bytes), by which `stop` finds its processes.
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "RAY_AUTH_MODE": "token",
        "HOME": str(home),
        "MENTOR_TEST_RAY_TEMP": tempfile.mkdtemp(prefix="ray-", dir="/tmp"),
    }
    env.pop("RAY_ADDRESS", None)
    subprocess.run(
        [str(BIN / "ray"), "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60
    )
    gcs, dashboard = free_port(), free_port()
    subprocess.run(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            f"--port={gcs}",
            f"--dashboard-port={dashboard}",
            f"--num-cpus={cpus}",
            "--include-dashboard=true",
            "--disable-usage-stats",
            f"--temp-dir={env['MENTOR_TEST_RAY_TEMP']}",
            # Ports of its own: the defaults (client server 10001, agent 52365, ...) are one per machine,
            # and a head whose agent finds its port taken never accepts a job ("No available agent").
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return env, f"http://127.0.0.1:{dashboard}"


def stop(env):
    """End the head this test started, and only it: `ray stop` would end every Ray cluster on the
    machine. Its processes are the ones that inherited MENTOR_TEST_RAY_TEMP from its `ray start` (the
    dashboard's module processes and the client server do not name the temp directory on their command
    line)."""
    temp_dir = env["MENTOR_TEST_RAY_TEMP"]
    marker = f"MENTOR_TEST_RAY_TEMP={temp_dir}\0"
    for _ in range(3):
        pids = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/environ") if _names(p, marker)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if not pids:
            break
        time.sleep(1.0)
    shutil.rmtree(temp_dir, ignore_errors=True)


def _names(path: Path, text: str) -> bool:
    try:
        return text.encode() in path.read_bytes()
    except OSError:  # the process ended meanwhile
        return False


def submit(env, address, *train_args, timeout=600):
    """`ray job submit` as the README has it; retried while a head that has just started answers "No
    available agent to submit job, please try again later" (its job agent comes up seconds after
    `ray start` returns: up to a minute on a loaded 2-core machine)."""
    command = [
        str(BIN / "ray"),
        "job",
        "submit",
        f"--address={address}",
        "--working-dir",
        str(ROOT),
        "--",
        "python",
        "train.py",
        "--config",
        "configs/quickstart.yaml",
        *train_args,
    ]
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if "No available agent" not in result.stdout + result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(3.0)


def test_ray_job_submit_runs_train_py(tmp_path):
    env, address = head_node(tmp_path, cpus=6)
    try:
        result = submit(
            env,
            address,
            "--config",
            "configs/debug.yaml",
            "run.total_env_steps=600",
            "learner.batch_size=16",
            "eval.max_steps=100",
            f"run.runs_dir={tmp_path}",
        )
    finally:
        stop(env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "succeeded" in output and "driving_score" in output
    assert list(tmp_path.glob("quickstart-*/checkpoint/agent.pt"))


def test_a_plan_the_cluster_cannot_hold_fails_at_start_saying_what_is_missing(tmp_path):
    env, address = head_node(tmp_path, cpus=2)  # a default `ray start --head` on a 2-core machine
    try:
        result = submit(
            env,
            address,
            "--config",
            "configs/debug.yaml",
            "run.placement_timeout_s=3",
            f"run.runs_dir={tmp_path}",
            timeout=300,
        )
    finally:
        stop(env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "the run needs CPU 4 at once" in output and "ray start --head --num-cpus=4" in output, output[-3000:]
    assert "workers.num_workers=1" in output
