"""Fault drill: kill the parts of a live run the way an operator (or a cluster) would, and count
what was lost, as JSON.

    .venv/bin/python benchmarks/fault_drill.py [--faults worker replica learner interrupt] [overrides ...]

Each fault gets a fresh run of the quickstart with the debug overlay on a local Ray cluster:
- worker:    a rollout worker is SIGKILLed mid-run; it is replaced and the run goes on.
- replica:   the feedback service's Serve replica is killed; Serve replaces it, items go unanswered.
- learner:   the learner's process is killed; the run stops naming it; a resume rebuilds the replay
             from the journal and goes on.
- interrupt: `train.py` (a subprocess, Ray mode) gets SIGINT: the workers drain, a checkpoint is written.
- early-kill: `train.py` (Ray mode, the default checkpoint interval of 300 s) is SIGKILLed a minute in,
             before its first periodic checkpoint; `--resume` continues from the checkpoint written at
             the start with every row of the journal.
- segment:   a journal segment of a stopped run is deleted; `--resume` stops with exit 2 naming the
             missing file, and the run directory is unchanged (no row is lost without a word).
- job-stop:  `ray job stop` of a run with a 1 s/batch feedback model, on a head node this drill starts
             (its own HOME and temp directory; only its processes are ended afterwards), with Ray's
             default RAY_JOB_STOP_WAIT_TIME_S: how long the stop took, whether the stop's checkpoint was
             written, rows lost, and what is left of the run (Serve app, named actors).
- disk:      the run directory is on a small tmpfs that another file fills while the run collects
             (needs root and mount; skipped elsewhere): `train.py` ends with "no space left on ...",
             exit 1, and after the space is freed `--resume` has every row.

"Lost" counts rows the learner had acknowledged (or the workers shipped, once drained) that are
missing from the replay afterwards; rows still inside a process that was killed were never
shipped, and are reported apart (`unshipped`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import ray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs.loader import CONFIG_DIR, load_config  # noqa: E402
from core import RoleFailed  # noqa: E402
from learners.replay import ReplayBuffer  # noqa: E402
from learners.replay_journal import ReplayJournal  # noqa: E402
from runner.checkpoint import find_checkpoint, write_checkpoint  # noqa: E402
from runtimes.registry import make_runtime  # noqa: E402

logger = logging.getLogger("drill")


def config(overrides):
    return load_config(
        [CONFIG_DIR / "quickstart.yaml", CONFIG_DIR / "debug.yaml"],
        [
            "workers.num_workers=2",
            "run.shutdown_ray=false",
            "run.total_env_steps=1000000",  # the drills step the runtime to their own counts
            "learner.batch_size=16",
            *overrides,
        ],
    )


def run_until(runtime, steps, timeout_s=300):
    started, report = time.monotonic(), {}
    while runtime.env_steps < steps:
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"stuck at {runtime.env_steps} env steps")
        report = runtime.step().metrics
    return report


def stored_rows(run_dir: Path) -> dict[int, int]:
    journal = ReplayJournal(run_dir / "replay")
    replay = ReplayBuffer(max(16, sum(segment.rows for segment in journal.segments)))
    journal.rebuild(replay)
    streams = replay.arrays["stream_id"][: len(replay)]
    return {int(s): int((streams == s).sum()) for s in set(streams.tolist())}


def compare(runtime, run_dir: Path, killed: set[int]) -> dict:
    """Drained workers: shipped == stored. Killed ones: stored >= shipped by their last report."""
    stored = stored_rows(run_dir)
    lost = 0
    for stream, report in runtime.worker_reports().items():
        lost += max(0, report["shipped_rows"] - stored.get(stream, 0))
    return {
        "rows_stored": sum(stored.values()),
        "rows_lost": lost,
        "streams": len(stored),
        "killed_streams": sorted(killed),
    }


@contextmanager
def live_run(overrides, run_dir: Path):
    """A run that has collected 600 env steps; shut down on leaving."""
    runtime = make_runtime(config(overrides), run_dir, transport="ray")
    try:
        run_until(runtime, 600)
        yield runtime
    finally:
        runtime.shutdown()


def drill_worker(overrides, out: Path) -> dict:
    run_dir = out / "worker"
    with live_run(overrides, run_dir) as runtime:
        killed = runtime.slots[0].stream_id
        started = time.monotonic()
        runtime.kill_worker(0)
        while runtime.counters.replaced_workers == 0:
            runtime.step()
        replaced_s = time.monotonic() - started
        report = run_until(runtime, runtime.env_steps + 600)
        runtime.finish()
        return {
            **compare(runtime, run_dir, {killed}),
            "replaced_in_s": round(replaced_s, 2),
            "availability": report["feedback/availability_total"],
        }


def drill_replica(overrides, out: Path) -> dict:
    run_dir = out / "replica"
    with live_run(overrides, run_dir) as runtime:
        (replica,) = [
            a
            for a in ray.util.list_named_actors(all_namespaces=True)
            if "SERVE_REPLICA" in a["name"] and runtime.transport.app_name in a["name"]
        ]
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=False)
        lowest, started = 1.0, runtime.env_steps
        while runtime.env_steps < started + 1200:
            report = runtime.step().metrics
            lowest = min(lowest, report["feedback/availability"])
        runtime.finish()
        return {
            **compare(runtime, run_dir, set()),
            "lowest_recent_availability": lowest,
            "availability": report["feedback/availability_total"],
        }


def drill_learner(overrides, out: Path) -> dict:
    run_dir = out / "learner"
    with live_run(overrides, run_dir) as runtime:
        write_checkpoint(run_dir, runtime)
        at_checkpoint = runtime.env_steps
        report = run_until(runtime, runtime.env_steps + 600)
        acknowledged = int(report["replay_inserted_total"])  # rows the learner had taken in
        ray.kill(runtime.transport.learner_actor, no_restart=True)
        message = ""
        try:
            for _ in range(30):
                runtime.step()
        except RoleFailed as exc:
            message = str(exc)
    resumed = make_runtime(config(overrides), run_dir, transport="ray")
    try:
        started = time.monotonic()
        resumed.load(find_checkpoint(run_dir))
        recovery_s = time.monotonic() - started
        report = resumed.step().metrics
        recovered = int(report["replay_inserted_total"])
        run_until(resumed, resumed.env_steps + 300)
    finally:
        resumed.shutdown()
    return {
        "stopped_with": message[:200],
        "env_steps_at_checkpoint": at_checkpoint,
        "rows_acknowledged_before_kill": acknowledged,
        "rows_after_resume": recovered,
        "rows_lost": max(0, acknowledged - recovered),
        "rebuild_s": round(recovery_s, 2),
    }


def drill_interrupt(overrides, out: Path) -> dict:
    runs = out / "interrupt"
    process = start_train(runs, overrides)
    wait_for_progress(process, runs, "env_steps", 600)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=300)[0]
    (run_dir,) = runs.glob("*")
    last = json.loads((run_dir / "progress.jsonl").read_text().splitlines()[-1])
    stored = sum(stored_rows(run_dir).values())
    return {
        "exit_code": process.returncode,
        "stopped_in_s": round(time.monotonic() - started, 1),
        "rows_shipped": int(last["shipped_rows"]),
        "rows_stored": stored,
        "rows_lost": max(0, int(last["shipped_rows"]) - stored),
        "checkpoint": (run_dir / "checkpoint" / "COMPLETE").is_file(),
        "said": [line for line in output.splitlines() if "SIGINT" in line][-1:],
    }


def start_train(runs: Path, overrides) -> subprocess.Popen:
    """`train.py` in Ray mode on the quickstart and debug configs, as a user starts it."""
    command = [
        sys.executable,
        "train.py",
        "--config",
        "configs/quickstart.yaml",
        "--config",
        "configs/debug.yaml",
        "run.mode=ray",
        "run.total_env_steps=100000",
        "run.progress_every_s=1",
        f"run.runs_dir={runs}",
        *overrides,
    ]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_progress(process: subprocess.Popen, runs: Path, key: str, at_least: float, timeout_s: float = 300) -> Path:
    """The run directory, once the last line of the run's progress log has `key` >= `at_least`."""
    deadline = time.monotonic() + timeout_s
    while True:
        progress = next(runs.glob("*/progress.jsonl"), None)
        lines = progress.read_text().strip().splitlines() if progress else []
        if lines and json.loads(lines[-1])[key] >= at_least:
            return progress.parent
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(process.communicate()[0][-3000:])
        time.sleep(0.5)


def last_progress(run_dir: Path) -> dict:
    return json.loads((run_dir / "progress.jsonl").read_text().strip().splitlines()[-1])


def resume(run_dir: Path, *overrides) -> subprocess.CompletedProcess:
    """`train.py --resume` with the budget spent: it loads, rebuilds the replay, checkpoints, evaluates nothing new."""
    return subprocess.run(
        [sys.executable, "train.py", "--resume", str(run_dir), "run.total_env_steps=1", "eval.routes=[0]", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def drill_early_kill(overrides, out: Path) -> dict:
    runs = out / "early-kill"
    process = start_train(runs, ["run.checkpoint_every_s=300", "learner.checkpoint_every_updates=1000000", *overrides])
    run_dir = wait_for_progress(process, runs, "replay_inserted_total", 1500)
    process.kill()  # train.py alone, as an operator or the OOM killer would
    process.communicate(timeout=60)
    stored = int(last_progress(run_dir)["replay_inserted_total"])
    on_disk = sum(stored_rows(run_dir).values())
    done = resume(run_dir)
    after = int(last_progress(run_dir)["replay_inserted_total"])
    return {
        "exit_code_of_resume": done.returncode,
        "rows_stored_before_kill": stored,
        "rows_in_journal": on_disk,
        "rows_after_resume": after,
        "rows_lost": max(0, stored - after),
        "said": [line for line in done.stderr.splitlines() if "the run continues at" in line][-1:],
    }


def drill_segment(overrides, out: Path) -> dict:
    runs = out / "segment"
    process = start_train(runs, overrides)
    run_dir = wait_for_progress(process, runs, "replay_inserted_total", 600)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=300)
    segments = sorted((run_dir / "replay").glob("*.npz"))
    victim = segments[len(segments) // 2]
    victim.unlink()
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    done = resume(run_dir)
    after = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    said = [line for line in done.stderr.splitlines() if "cannot resume" in line]
    return {
        "exit_code_of_resume": done.returncode,
        "deleted": victim.name,
        "named_the_file": bool(said) and victim.name.split("-")[0] in said[-1],
        "run_dir_unchanged": before == after,
        "rows_lost_without_a_word": 0 if done.returncode == 2 else None,
        "said": [line[-300:] for line in said[-1:]],
    }


def drill_disk(overrides, out: Path) -> dict:
    mount = out / "disk"
    mount.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128m", "mentor-drill", str(mount)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        return {"skipped": f"cannot mount a tmpfs here: {mounted.stderr.strip()[:200]}"}
    try:
        process = start_train(mount, overrides)
        run_dir = wait_for_progress(process, mount, "replay_inserted_total", 600)
        filler = mount / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        output = process.communicate(timeout=300)[0]
        stored = int(last_progress(run_dir)["replay_inserted_total"])
        filler.unlink()
        done = resume(run_dir)
        after = int(last_progress(run_dir)["replay_inserted_total"])
        return {
            "exit_code": process.returncode,
            "traceback": "Traceback" in output,
            "said": [line[-400:] for line in output.splitlines() if "no space left on" in line][-1:],
            "exit_code_of_resume": done.returncode,
            "rows_stored_before": stored,
            "rows_after_resume": after,
            "rows_lost": max(0, stored - after),
        }
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


class OwnHead:
    """A `ray start --head` of this drill's own: its own HOME (token file), temp directory and ports,
    ended by killing the processes that inherited its marker (`ray stop` would end every cluster on
    the machine)."""

    def __init__(self, cpus: int = 6):
        self.tmp = Path(tempfile.mkdtemp(prefix="drill-", dir="/tmp"))  # short: Ray's socket paths
        (self.tmp / "home").mkdir()
        self.gcs, self.dashboard = _free_port(), _free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(
            PATH=f"{Path(sys.executable).parent}:{self.env['PATH']}",
            HOME=str(self.tmp / "home"),
            RAY_AUTH_MODE="token",
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # the head listens on loopback (docs/cluster.md)
            MENTOR_DRILL_HEAD=str(self.tmp),  # inherited by every process of the head: how __exit__ finds them
        )
        self.cpus = cpus

    def cli(self, *args, timeout=300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(sys.executable).parent / "ray"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def __enter__(self):
        self.cli("get-auth-token", "--generate")
        done = self.cli(
            "start",
            "--head",
            f"--port={self.gcs}",
            f"--dashboard-port={self.dashboard}",
            f"--num-cpus={self.cpus}",
            f"--temp-dir={self.tmp / 'ray'}",
            "--include-dashboard=true",
            "--disable-usage-stats",
            # Ports of its own: the defaults are one per machine, and an agent that finds its port taken
            # never accepts a job ("No available agent").
            f"--ray-client-server-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        return self

    def submit(self, *command: str) -> str:
        """The job id of `command`, submitted without waiting (retried while the job agent starts)."""
        for _ in range(12):
            done = self.cli(
                "job",
                "submit",
                "--no-wait",
                f"--address=http://127.0.0.1:{self.dashboard}",
                "--working-dir",
                str(ROOT),
                "--",
                *command,
            )
            said = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # the CLI colours the job id
            found = re.findall(r"raysubmit_[A-Za-z0-9]+", said)
            if found:
                return found[0]
            time.sleep(5)
        raise RuntimeError((done.stdout + done.stderr)[-2000:])

    def left_of(self, run_id: str) -> dict:
        """The Serve apps and named actors of `run_id` still on the cluster."""
        script = (
            "import json, ray; from ray import serve; ray.init(address='127.0.0.1:%d', log_to_driver=False); "
            "print('LEFT', json.dumps({'apps': [a for a in serve.status().applications if %r in a], "
            "'actors': [a['name'] for a in ray.util.list_named_actors(all_namespaces=True) if %r in a['name']]}))"
            % (self.gcs, run_id, run_id)
        )
        done = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True, text=True, timeout=180)
        lines = [line for line in done.stdout.splitlines() if line.startswith("LEFT ")]
        return json.loads(lines[-1][5:]) if lines else {"error": done.stderr[-500:]}

    def __exit__(self, *exc):
        for _ in range(3):
            marker = f"MENTOR_DRILL_HEAD={self.tmp}\0"
            pids = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/environ") if _names(p, marker)]
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if not pids:
                break
            time.sleep(1.0)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _names(cmdline: Path, text: str) -> bool:
    try:
        return text.encode() in cmdline.read_bytes()
    except OSError:
        return False


def drill_job_stop(overrides, out: Path) -> dict:
    runs = out / "job-stop"
    with OwnHead() as head:
        job = head.submit(
            "python",
            "train.py",
            "--config",
            "configs/quickstart.yaml",
            "--config",
            "configs/debug.yaml",
            "run.total_env_steps=100000",
            "run.progress_every_s=1",
            f"run.runs_dir={runs}",
            "feedback.model=slow",
            "feedback.slow_model_delay_s=1.0",
            *overrides,
        )
        deadline = time.monotonic() + 400
        while True:
            progress = next(runs.glob("*/progress.jsonl"), None)
            lines = progress.read_text().strip().splitlines() if progress else []
            if lines and json.loads(lines[-1])["env_steps"] >= 400:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(head.cli("job", "logs", job, f"--address=http://127.0.0.1:{head.dashboard}").stdout)
            time.sleep(1.0)
        run_dir = progress.parent
        started = time.monotonic()
        stopped = head.cli("job", "stop", job, f"--address=http://127.0.0.1:{head.dashboard}")
        while time.monotonic() - started < 60:  # the driver's exit (the CLI may return before it)
            status = head.cli("job", "status", job, f"--address=http://127.0.0.1:{head.dashboard}")
            said = (status.stdout + status.stderr).lower()
            if "stopped" in said or "failed" in said or "succeeded" in said:
                break
            time.sleep(0.5)
        stop_s = time.monotonic() - started
        time.sleep(8.0)  # the janitor's look and the app's deletion
        left = head.left_of(run_dir.name)
        supervisor = list((head.tmp / "ray").glob(f"session_latest/logs/jobs/supervisor-{job}.log"))
        said = supervisor[0].read_text() if supervisor else ""
    shipped = int(last_progress(run_dir)["shipped_rows"])
    stored = sum(stored_rows(run_dir).values())
    saved = json.loads((run_dir / "checkpoint" / "COMPLETE").read_text())
    return {
        "ray_job_stop_said": (stopped.stdout + stopped.stderr).strip().splitlines()[-1:],
        "ray_job_stop_s": round(stop_s, 1),
        "stop_checkpoint_env_steps": saved["env_steps"],
        "graceful": "terminated gracefully" in said,
        "force_killed": "force-killed" in said,
        "rows_shipped": shipped,
        "rows_stored": stored,
        "rows_lost": max(0, shipped - stored),
        "left": left,
    }


DRILLS = {
    "worker": drill_worker,
    "replica": drill_replica,
    "learner": drill_learner,
    "interrupt": drill_interrupt,
    "early-kill": drill_early_kill,
    "segment": drill_segment,
    "disk": drill_disk,
    "job-stop": drill_job_stop,
}
SUBPROCESS_DRILLS = ("interrupt", "early-kill", "segment", "disk", "job-stop")  # each runs train.py as a user would


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", nargs="+", default=list(DRILLS), choices=list(DRILLS))
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary directory)")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = args.out or Path(tempfile.mkdtemp(prefix="mentor-drill-"))
    results = {}
    in_process = [f for f in args.faults if f not in SUBPROCESS_DRILLS]
    if in_process:
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, 5), include_dashboard=False, log_to_driver=False)
        try:
            for fault in in_process:
                results[fault] = DRILLS[fault](args.overrides, out)
        finally:
            ray.shutdown()
    for fault in SUBPROCESS_DRILLS:
        if fault in args.faults:
            results[fault] = DRILLS[fault](args.overrides, out)
    results["setting"] = {"cpus": os.cpu_count(), "machine": platform.machine(), "runs": str(out)}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
