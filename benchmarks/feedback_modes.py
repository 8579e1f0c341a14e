"""Rollout throughput with feedback off, asynchronous, and synchronous, in one run (JSON).

    .venv/bin/python benchmarks/feedback_modes.py [--workers 2] [--seconds 60] [--town Town01]
    # availability and latency at full rollout load with the CLIP reward on:
    .venv/bin/python benchmarks/feedback_modes.py --modes async feedback.model=expert+clip \
        "feedback.wanted=[vlm_action,clip_margin]" learner.clip_reward_scale=0.25
    # ... with the fine-tuned VLM on vLLM (the VLM environment), or DriveVLM-RL's gated pathways:
    $(scripts/bootstrap_vlm.sh) benchmarks/feedback_modes.py --modes async --config configs/vlm/cpu.yaml
    $(scripts/bootstrap_vlm.sh) benchmarks/feedback_modes.py --modes async --config configs/vlm/cpu.yaml \
        --config configs/vlm/drivevlm-cpu.yaml

Same workers, environment, learner and feedback model (the expert advisor behind Ray Serve) for
all three; only `feedback.mode` changes. Each mode warms up first, then env steps are counted over
a fixed window. Reports steps/s per mode, the ratios async/off and async/sync, feedback
availability, learner updates/s and policy lag, and where the CPU went: CPU ms per env step of
each kind of process of the local cluster (rollout workers, learner, Serve replica, controller and
proxy, Ray's own daemons), read from /proc on Linux.

`--repeats N` runs the modes N times in turn (off, async, sync, off, ...) and reports the median
rate of each, so that load from other jobs on the machine falls on every mode alike.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import ray

from cluster.launch import cpus_needed
from configs.loader import CONFIG_DIR, load_config
from runtimes.registry import make_runtime

logger = logging.getLogger("benchmark")
_PROC = Path("/proc")


def _cpu_by_process_kind() -> dict[str, float]:
    """CPU seconds so far of this process and its descendants (the local cluster), by kind:
    the Ray actor class (ray::WorkerActor, ray::ServeReplica, ...) or the daemon's name."""
    if not (_PROC / "self" / "stat").exists():
        return {}
    children = collections.defaultdict(list)
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            children[int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])].append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    totals, todo, tick = collections.Counter(), [os.getpid()], os.sysconf("SC_CLK_TCK")
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
            command = (_PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        totals[_kind(pid, command)] += (int(fields[11]) + int(fields[12])) / tick
    return dict(totals)


def _kind(pid: int, command: list[bytes]) -> str:
    if pid == os.getpid():
        return "driver"
    first = command[0].decode(errors="replace")
    if first.startswith("ray::"):
        name = first[len("ray::") :]
        return "ServeReplica" if name.startswith("ServeReplica") else name.split(".")[0]
    words = b" ".join(command).decode(errors="replace")
    for name in ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env"):
        if name in words:
            return name
    return "other"


def measure(config, warmup_s: float, window_s: float) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"feedback-{config.feedback.mode}-"))  # the replay journal goes here
    runtime = make_runtime(config, run_dir, transport="ray")
    try:
        started = time.monotonic()
        while runtime.env_steps == 0 or time.monotonic() - started < warmup_s:
            runtime.step()
        steps0, t0, cpu0 = runtime.env_steps, time.monotonic(), _cpu_by_process_kind()
        first = runtime.step().metrics
        report, latency_sum, answered = first, 0.0, 0.0
        while time.monotonic() - t0 < window_s:
            previous, report = report, runtime.step().metrics
            new = report.get("feedback/answered", 0.0) - previous.get("feedback/answered", 0.0)
            latency_sum, answered = latency_sum + new * report.get("feedback/latency_s", 0.0), answered + new
        elapsed, steps, cpu1 = time.monotonic() - t0, runtime.env_steps - steps0, _cpu_by_process_kind()
        cpu = {
            kind: round(1e3 * (cpu1[kind] - cpu0.get(kind, 0.0)) / max(steps, 1), 3)
            for kind in cpu1
            if cpu1[kind] - cpu0.get(kind, 0.0) > 0.01 * elapsed
        }
        fields = ("answered", "malformed", "expired")
        asked = sum(report.get(f"feedback/{k}", 0.0) - first.get(f"feedback/{k}", 0.0) for k in fields)
        return {
            "env_steps_per_s": steps / elapsed,
            # over the measured window: answered / wanted, and the mean latency of those answers
            "feedback_availability": answered / asked if asked else None,
            "feedback_latency_s": latency_sum / answered if answered else None,
            "feedback_pending": report.get("feedback/pending"),
            "backpressure_waits": report.get("backpressure_waits"),
            "learner_updates_per_s": (report["learner_updates"] - first["learner_updates"]) / elapsed,
            "policy_lag": report["policy_lag"],
            "window_s": elapsed,
            # CPU ms per env step by process kind (those that used more than 1 % of a core)
            "cpu_ms_per_step": dict(sorted(cpu.items(), key=lambda kv: -kv[1])),
            "cpu_ms_per_step_total": round(sum(cpu.values()), 3),
            # DriveVLM-RL runs: the share of steps whose gate called the VLM, and its latency per call
            **{
                key: report[key]
                for key in ("drivevlm/gate_rate", "drivevlm/vlm_latency_s", "drivevlm/unscored_fraction")
                if key in report
            },
        }
    finally:
        runtime.shutdown()
        shutil.rmtree(run_dir, ignore_errors=True)


def median_run(measured: list[dict]) -> dict:
    """The run with the median rate (the lower middle one of an even count), with every run's rate."""
    ordered = sorted(measured, key=lambda run: run["env_steps_per_s"])
    return {
        **ordered[(len(ordered) - 1) // 2],
        "env_steps_per_s_runs": [round(run["env_steps_per_s"], 2) for run in measured],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window per mode")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=1, help="run the modes this many times in turn")
    parser.add_argument("--town", default=None)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["off", "async", "sync"],
        choices=["off", "async", "sync"],
        help="e.g. --modes async to measure availability at full load only",
    )
    parser.add_argument("--config", action="append", default=[], help="overlays on configs/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", help="extra config overrides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = [
        f"workers.num_workers={args.workers}",
        "run.shutdown_ray=false",
        "run.total_env_steps=1000000",  # measured over a window, not to a budget
        "workers.random_steps=0",
        "learner.learning_starts=256",
        *([f"env.town={args.town}"] if args.town else []),
        *args.overrides,
    ]
    files = [CONFIG_DIR / "quickstart.yaml", *args.config]
    configs = {mode: load_config(files, base + [f"feedback.mode={mode}"]) for mode in args.modes}
    reference = configs.get("async", next(iter(configs.values())))
    ray.init(
        address="local",
        num_cpus=max(os.cpu_count() or 1, cpus_needed(reference)),
        include_dashboard=False,
        log_to_driver=False,
    )
    runs = collections.defaultdict(list)
    try:
        for _ in range(args.repeats):
            for mode, config in configs.items():
                runs[mode].append(measure(config, args.warmup, args.seconds))
    finally:
        ray.shutdown()
    results = {mode: median_run(measured) for mode, measured in runs.items()}
    rate = {m: results[m]["env_steps_per_s"] for m in args.modes}
    if "async" in rate and "off" in rate:
        results["ratio_async_over_off"] = rate["async"] / rate["off"]
    if "async" in rate and "sync" in rate:
        results["ratio_async_over_sync"] = rate["async"] / rate["sync"]
    results["setting"] = {
        "workers": args.workers,
        "town": reference.env.town or "default",
        "traffic": reference.env.traffic,
        "feedback_model": reference.feedback.model,
        "wanted": list(reference.feedback.wanted),
        "bundle_steps": reference.feedback.bundle_steps,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "window_s": args.seconds,
        "repeats": args.repeats,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
