"""One report for every mode: the learner's numbers plus the workers' merged, under the same
metric names whether the workers run in this process or on a cluster.

Feedback availability and latency are reported over the last interval (what changed since the
previous report), so a dashboard shows the service as it is now; the counts are running totals.
"""

from __future__ import annotations

import time

from core import Episode, StepReport

RECENT_EPISODES = 20  # the episode metrics average this many of the latest episodes

_FEEDBACK_COUNTS = ("answered", "malformed", "expired", "late", "failed_calls")
_WORKER_COUNTS = (
    "env_steps",
    "random_actions",
    "shipped_rows",
    "backpressure_waits",
    "backpressure_wait_s",
    "simulator_failures",
)


# DriveVLM-RL's reward (workers/row_reward.py): running totals in the workers' feedback reports.
_DRIVEVLM_COUNTS = (
    "requested_items",
    "gated_items",
    "synthesized_steps",
    "unscored_steps",
    "vlm_answers",
    "vlm_latency_sum_s",
)

_NO_REPORT = {
    **{key: 0 for key in _WORKER_COUNTS},
    "feedback": {**{key: 0 for key in _FEEDBACK_COUNTS}, "latency_sum_s": 0.0, "pending": 0},
}


class WorkerReports:
    """Merges the workers' latest reports (running totals), with availability and latency over the
    interval since the previous merge."""

    def __init__(self):
        self._previous = {"answered": 0, "wanted": 0, "latency_sum_s": 0.0}

    def merge(self, reports: list[dict]) -> dict[str, float]:
        """The same keys every time: zeros (and availability 1) before any worker has reported."""
        reports = reports or [_NO_REPORT]
        fb = {key: sum(r["feedback"][key] for r in reports) for key in (*_FEEDBACK_COUNTS, "latency_sum_s")}
        wanted = fb["answered"] + fb["malformed"] + fb["expired"]
        answered = fb["answered"] - self._previous["answered"]
        asked = wanted - self._previous["wanted"]
        latency = fb["latency_sum_s"] - self._previous["latency_sum_s"]
        self._previous = {"answered": fb["answered"], "wanted": wanted, "latency_sum_s": fb["latency_sum_s"]}
        merged = {
            ("worker_env_steps" if key == "env_steps" else key): float(sum(r[key] for r in reports))
            for key in _WORKER_COUNTS
        }
        return {
            **merged,
            "feedback/pending": float(sum(r["feedback"]["pending"] for r in reports)),
            "feedback/availability": answered / asked if asked > 0 else 1.0,  # over the last interval
            "feedback/latency_s": latency / answered if answered > 0 else 0.0,  # mean over the last interval
            "feedback/availability_total": fb["answered"] / wanted if wanted else 1.0,
            **{f"feedback/{key}": float(fb[key]) for key in _FEEDBACK_COUNTS},
            **drivevlm_metrics(reports),
        }


def drivevlm_metrics(reports: list[dict]) -> dict[str, float]:
    """The gate's share of steps that called the VLM, the VLM's latency per call and the share of
    synthesized rewards without a score, over the run; nothing for runs without that reward."""
    if not all("gated_items" in r["feedback"] for r in reports):
        return {}
    total = {key: sum(r["feedback"][key] for r in reports) for key in _DRIVEVLM_COUNTS}
    return {
        "drivevlm/gate_rate": total["gated_items"] / max(total["requested_items"], 1),
        "drivevlm/gated_items": float(total["gated_items"]),
        "drivevlm/unscored_fraction": total["unscored_steps"] / max(total["synthesized_steps"], 1),
        "drivevlm/vlm_latency_s": total["vlm_latency_sum_s"] / max(total["vlm_answers"], 1),
    }


def episode_metrics(recent: list[Episode]) -> dict[str, float]:
    if not recent:
        return {}
    n = len(recent)
    return {
        "episode_return": sum(e.episode_return for e in recent) / n,
        "route_completion": sum(e.route_completion for e in recent) / n,
        "driving_score": sum(e.driving_score for e in recent) / n,
    }


class StepRate:
    """Env steps per second between consecutive reports."""

    def __init__(self, env_steps: int = 0):
        self._steps, self._time = env_steps, time.monotonic()

    def __call__(self, env_steps: int) -> float:
        now = time.monotonic()
        rate = (env_steps - self._steps) / max(now - self._time, 1e-6)
        self._steps, self._time = env_steps, now
        return rate


class RunReport:
    """A runtime's StepReport, built the same way in every mode: the learner's report, the workers'
    merged, env steps per second, replacements, and the recent episodes (counted in `counters`)."""

    def __init__(self):
        self._workers = WorkerReports()
        self._rate = StepRate()
        self._recent: list[Episode] = []

    def start(self, env_steps: int) -> None:
        """The rate counts from here (a resumed run starts at its checkpoint's env steps)."""
        self._rate = StepRate(env_steps)

    def build(self, learner: dict[str, float], workers: list[dict], episodes: list[Episode], counters) -> StepReport:
        counters.episodes += len(episodes)
        self._recent = (self._recent + episodes)[-RECENT_EPISODES:]
        metrics = {
            **learner,
            **self._workers.merge(workers),
            "env_steps_per_s": self._rate(int(learner["env_steps"])),
            "replaced_workers": float(counters.replaced_workers),
            **episode_metrics(self._recent),
        }
        return StepReport(metrics, episodes)
