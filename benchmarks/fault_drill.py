"""Fault drill: kill the parts of a live run the way an operator (or a cluster) would, and count
what was lost, as JSON.

    .venv/bin/python benchmarks/fault_drill.py [--faults worker replica learner interrupt] [overrides ...]

Each fault gets a fresh run of the quickstart with the debug overlay on a local Ray cluster:
- worker:    a rollout worker is SIGKILLed mid-run; it is replaced and the run goes on.
- replica:   the feedback service's Serve replica is killed; Serve replaces it, items go unanswered.
- learner:   the learner's process is killed; the run stops naming it; a resume rebuilds the replay
             from the journal and goes on.
- interrupt: `train.py` (a subprocess, Ray mode) gets SIGINT: the workers drain, a checkpoint is written.

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

from cluster.launch import launch  # noqa: E402
from configs.loader import CONFIG_DIR, load_config  # noqa: E402
from core import RoleFailed  # noqa: E402
from learners.replay import ReplayBuffer  # noqa: E402
from learners.replay_journal import ReplayJournal  # noqa: E402
from runner.checkpoint import find_checkpoint, write_checkpoint  # noqa: E402

logger = logging.getLogger("drill")


def config(overrides):
    return load_config([CONFIG_DIR / "quickstart.yaml", CONFIG_DIR / "debug.yaml"],
                       ["workers.num_workers=2", "run.shutdown_ray=false", "learner.batch_size=16", *overrides])


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
    streams = replay.arrays["stream_id"][:len(replay)]
    return {int(s): int((streams == s).sum()) for s in set(streams.tolist())}


def compare(runtime, run_dir: Path, killed: set[int]) -> dict:
    """Drained workers: shipped == stored. Killed ones: stored >= shipped by their last report."""
    stored = stored_rows(run_dir)
    lost = 0
    for stream, report in runtime.worker_reports().items():
        lost += max(0, report["shipped_rows"] - stored.get(stream, 0))
    return {"rows_stored": sum(stored.values()), "rows_lost": lost, "streams": len(stored),
            "killed_streams": sorted(killed)}


@contextmanager
def live_run(overrides, run_dir: Path):
    """A run that has collected 600 env steps; shut down on leaving."""
    runtime = launch(config(overrides), run_dir)
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
        return {**compare(runtime, run_dir, {killed}), "replaced_in_s": round(replaced_s, 2),
                "availability": report["feedback/availability_total"]}


def drill_replica(overrides, out: Path) -> dict:
    run_dir = out / "replica"
    with live_run(overrides, run_dir) as runtime:
        (replica,) = [a for a in ray.util.list_named_actors(all_namespaces=True)
                      if "SERVE_REPLICA" in a["name"] and runtime.app_name in a["name"]]
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=False)
        lowest, started = 1.0, runtime.env_steps
        while runtime.env_steps < started + 1200:
            report = runtime.step().metrics
            lowest = min(lowest, report["feedback/availability"])
        runtime.finish()
        return {**compare(runtime, run_dir, set()), "lowest_recent_availability": lowest,
                "availability": report["feedback/availability_total"]}


def drill_learner(overrides, out: Path) -> dict:
    run_dir = out / "learner"
    with live_run(overrides, run_dir) as runtime:
        write_checkpoint(run_dir, runtime)
        at_checkpoint = runtime.env_steps
        report = run_until(runtime, runtime.env_steps + 600)
        acknowledged = int(report["replay_inserted_total"])  # rows the learner had taken in
        ray.kill(runtime.learner, no_restart=True)
        message = ""
        try:
            for _ in range(30):
                runtime.step()
        except RoleFailed as exc:
            message = str(exc)
    resumed = launch(config(overrides), run_dir)
    try:
        started = time.monotonic()
        resumed.load(find_checkpoint(run_dir))
        recovery_s = time.monotonic() - started
        report = resumed.step().metrics
        recovered = int(report["replay_inserted_total"])
        run_until(resumed, resumed.env_steps + 300)
    finally:
        resumed.shutdown()
    return {"stopped_with": message[:200], "env_steps_at_checkpoint": at_checkpoint,
            "rows_acknowledged_before_kill": acknowledged, "rows_after_resume": recovered,
            "rows_lost": max(0, acknowledged - recovered), "rebuild_s": round(recovery_s, 2)}


def drill_interrupt(overrides, out: Path) -> dict:
    runs = out / "interrupt"
    command = [sys.executable, "train.py", "--config", "configs/quickstart.yaml", "--config", "configs/debug.yaml",
               "run.total_env_steps=100000", "run.progress_every_s=1", f"run.runs_dir={runs}", *overrides]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not any(p.stat().st_size > 0 for p in runs.glob("*/progress.jsonl")) or \
            json.loads(next(runs.glob("*/progress.jsonl")).read_text().splitlines()[-1])["env_steps"] < 600:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(process.communicate()[0][-3000:])
        time.sleep(1.0)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=300)[0]
    (run_dir,) = runs.glob("*")
    last = json.loads((run_dir / "progress.jsonl").read_text().splitlines()[-1])
    stored = sum(stored_rows(run_dir).values())
    return {"exit_code": process.returncode, "stopped_in_s": round(time.monotonic() - started, 1),
            "rows_shipped": int(last["shipped_rows"]), "rows_stored": stored,
            "rows_lost": max(0, int(last["shipped_rows"]) - stored),
            "checkpoint": (run_dir / "checkpoint" / "COMPLETE").is_file(),
            "said": [line for line in output.splitlines() if "SIGINT" in line][-1:]}


DRILLS = {"worker": drill_worker, "replica": drill_replica, "learner": drill_learner, "interrupt": drill_interrupt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", nargs="+", default=list(DRILLS), choices=list(DRILLS))
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary directory)")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = args.out or Path(tempfile.mkdtemp(prefix="mentor-drill-"))
    results = {}
    in_process = [f for f in args.faults if f != "interrupt"]
    if in_process:
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, 5), include_dashboard=False, log_to_driver=False)
        try:
            for fault in in_process:
                results[fault] = DRILLS[fault](args.overrides, out)
        finally:
            ray.shutdown()
    if "interrupt" in args.faults:
        results["interrupt"] = drill_interrupt(args.overrides, out)
    results["setting"] = {"cpus": os.cpu_count(), "machine": platform.machine(), "runs": str(out)}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
