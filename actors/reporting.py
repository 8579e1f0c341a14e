"""One report for every mode: the learner's numbers plus the workers' merged, under the same
metric names whether the workers run in this process or on a cluster."""
from __future__ import annotations

import time

from core import Episode

_FEEDBACK_COUNTS = ("answered", "malformed", "expired", "late", "failed_calls")


def merge_worker_reports(reports: list[dict]) -> dict[str, float]:
    """Sum the workers' cumulative counters; feedback availability over every wanted field."""
    if not reports:
        return {}
    fb = {key: sum(r["feedback"][key] for r in reports) for key in _FEEDBACK_COUNTS}
    wanted = fb["answered"] + fb["malformed"] + fb["expired"]
    answered = max(fb["answered"], 1)
    latency = sum(r["feedback"]["latency_s"] * r["feedback"]["answered"] for r in reports) / answered
    return {
        "worker_env_steps": float(sum(r["env_steps"] for r in reports)),
        "random_actions": float(sum(r["random_actions"] for r in reports)),
        "shipped_rows": float(sum(r["shipped_rows"] for r in reports)),
        "backpressure_waits": float(sum(r["backpressure_waits"] for r in reports)),
        "backpressure_wait_s": float(sum(r["backpressure_wait_s"] for r in reports)),
        "simulator_failures": float(sum(r["simulator_failures"] for r in reports)),
        "feedback/pending": float(sum(r["feedback"]["pending"] for r in reports)),
        "feedback/availability": fb["answered"] / wanted if wanted else 1.0,
        "feedback/latency_s": latency,
        **{f"feedback/{key}": float(value) for key, value in fb.items()},
    }


def episode_metrics(recent: list[Episode]) -> dict[str, float]:
    if not recent:
        return {}
    n = len(recent)
    return {"episode_return": sum(e.episode_return for e in recent) / n,
            "route_completion": sum(e.route_completion for e in recent) / n,
            "driving_score": sum(e.driving_score for e in recent) / n}


class StepRate:
    """Env steps per second between consecutive reports."""

    def __init__(self, env_steps: int = 0):
        self._steps, self._time = env_steps, time.monotonic()

    def __call__(self, env_steps: int) -> float:
        now = time.monotonic()
        rate = (env_steps - self._steps) / max(now - self._time, 1e-6)
        self._steps, self._time = env_steps, now
        return rate
