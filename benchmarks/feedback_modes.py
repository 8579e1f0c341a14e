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
availability, learner updates/s and policy lag.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import ray

from cluster.launch import cpus_needed, launch
from configs.loader import CONFIG_DIR, load_config

logger = logging.getLogger("benchmark")


def measure(config, warmup_s: float, window_s: float) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"feedback-{config.feedback.mode}-"))  # the replay journal goes here
    runtime = launch(config, run_dir)
    try:
        started = time.monotonic()
        while runtime.env_steps == 0 or time.monotonic() - started < warmup_s:
            runtime.step()
        steps0, t0 = runtime.env_steps, time.monotonic()
        first = runtime.step().metrics
        report, latency_sum, answered = first, 0.0, 0.0
        while time.monotonic() - t0 < window_s:
            previous, report = report, runtime.step().metrics
            new = report.get("feedback/answered", 0.0) - previous.get("feedback/answered", 0.0)
            latency_sum, answered = latency_sum + new * report.get("feedback/latency_s", 0.0), answered + new
        elapsed = time.monotonic() - t0
        fields = ("answered", "malformed", "expired")
        asked = sum(report.get(f"feedback/{k}", 0.0) - first.get(f"feedback/{k}", 0.0) for k in fields)
        return {
            "env_steps_per_s": (runtime.env_steps - steps0) / elapsed,
            # over the measured window: answered / wanted, and the mean latency of those answers
            "feedback_availability": answered / asked if asked else None,
            "feedback_latency_s": latency_sum / answered if answered else None,
            "feedback_pending": report.get("feedback/pending"),
            "backpressure_waits": report.get("backpressure_waits"),
            "learner_updates_per_s": (report["learner_updates"] - first["learner_updates"]) / elapsed,
            "policy_lag": report["policy_lag"],
            "window_s": elapsed,
            # DriveVLM-RL runs: the share of steps whose gate called the VLM, and its latency per call
            **{key: report[key] for key in ("drivevlm/gate_rate", "drivevlm/vlm_latency_s",
                                            "drivevlm/unscored_fraction") if key in report},
        }
    finally:
        runtime.shutdown()
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window per mode")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--town", default=None)
    parser.add_argument("--modes", nargs="+", default=["off", "async", "sync"], choices=["off", "async", "sync"],
                        help="e.g. --modes async to measure availability at full load only")
    parser.add_argument("--config", action="append", default=[], help="overlays on configs/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", help="extra config overrides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = [f"workers.num_workers={args.workers}", "run.shutdown_ray=false", "workers.random_steps=0",
            "learner.learning_starts=256", *([f"env.town={args.town}"] if args.town else []), *args.overrides]
    files = [CONFIG_DIR / "quickstart.yaml", *args.config]
    configs = {mode: load_config(files, base + [f"feedback.mode={mode}"])
               for mode in args.modes}
    reference = configs.get("async", next(iter(configs.values())))
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, cpus_needed(reference)),
             include_dashboard=False, log_to_driver=False)
    try:
        results = {mode: measure(config, args.warmup, args.seconds) for mode, config in configs.items()}
    finally:
        ray.shutdown()
    rate = {m: results[m]["env_steps_per_s"] for m in args.modes}
    if "async" in rate and "off" in rate:
        results["ratio_async_over_off"] = rate["async"] / rate["off"]
    if "async" in rate and "sync" in rate:
        results["ratio_async_over_sync"] = rate["async"] / rate["sync"]
    results["setting"] = {"workers": args.workers, "town": reference.env.town or "default",
                          "traffic": reference.env.traffic, "feedback_model": reference.feedback.model,
                          "wanted": list(reference.feedback.wanted), "bundle_steps": reference.feedback.bundle_steps,
                          "cpus": os.cpu_count(), "machine": platform.machine(), "window_s": args.seconds}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
