"""Mentor's metrics in the Ray dashboard (ray.util.metrics; exported as ray_mentor_*).

Metric objects must be created inside the process that records them, so each role builds its
own small set here.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

_LATENCY_BOUNDARIES = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]


class WorkerMetrics:
    def __init__(self, worker_uid: int):
        tags = {"worker": str(worker_uid)}
        self._env_steps = Counter("mentor_env_steps", "environment steps taken", tag_keys=("worker",))
        self._pending = Gauge("mentor_feedback_pending", "feedback items awaiting an answer", tag_keys=("worker",))
        self._availability = Gauge(
            "mentor_feedback_availability", "fraction of wanted feedback fields answered", tag_keys=("worker",)
        )
        self._latency = Histogram(
            "mentor_feedback_latency_s",
            "seconds from request to answer",
            boundaries=_LATENCY_BOUNDARIES,
            tag_keys=("worker",),
        )
        self._waits = Counter(
            "mentor_backpressure_waits", "times a worker waited for feedback to catch up", tag_keys=("worker",)
        )
        self._episode_return = Gauge(
            "mentor_episode_return", "return of the last finished episode", tag_keys=("worker",)
        )
        self._simulator_failures = Counter(
            "mentor_simulator_failures",
            "simulator failures a worker recovered from (episode truncated)",
            tag_keys=("worker",),
        )
        self._failed_calls = Counter(
            "mentor_feedback_failed_calls",
            "feedback calls that failed (model error, dead replica, time-out)",
            tag_keys=("worker",),
        )
        for metric in (
            self._env_steps,
            self._pending,
            self._availability,
            self._latency,
            self._waits,
            self._episode_return,
            self._simulator_failures,
            self._failed_calls,
        ):
            metric.set_default_tags(tags)
        for counter in (self._env_steps, self._waits, self._simulator_failures, self._failed_calls):
            _start_at_zero(counter)
        self._last: dict[str, int] = {}

    def _count(self, counter: Counter, name: str, total: int) -> None:
        """Counters take increments; the worker reports running totals."""
        delta = total - self._last.get(name, 0)
        if delta > 0:
            counter.inc(delta)
            self._last[name] = total

    def record(self, report: dict) -> None:
        feedback = report["feedback"]
        self._count(self._env_steps, "env_steps", report["env_steps"])
        self._count(self._waits, "waits", report["backpressure_waits"])
        self._count(self._simulator_failures, "failures", report["simulator_failures"])
        self._count(self._failed_calls, "failed_calls", feedback["failed_calls"])
        self._pending.set(feedback["pending"])
        # Availability over this report's interval, not since the start.
        answered = feedback["answered"] - self._last.get("answered", 0)
        wanted = feedback["answered"] + feedback["malformed"] + feedback["expired"] - self._last.get("wanted", 0)
        if wanted > 0:
            self._availability.set(answered / wanted)
        self._last["answered"] = feedback["answered"]
        self._last["wanted"] = feedback["answered"] + feedback["malformed"] + feedback["expired"]
        for latency in feedback["latencies"]:  # each answer an observation
            self._latency.observe(latency)
        if report["episodes"]:
            self._episode_return.set(report["episodes"][-1].episode_return)


def _start_at_zero(counter: Counter) -> None:
    """A counter's series exists only once it is recorded, and Counter.inc refuses 0: record a zero
    so that a dashboard shows 0 from the start instead of "no data"."""
    counter._record(0.0)  # noqa: SLF001 - the public inc() rejects 0


class LearnerMetrics:
    def __init__(self):
        self._updates = Counter("mentor_learner_updates", "gradient updates")
        _start_at_zero(self._updates)
        self._gauges = {
            name: Gauge(f"mentor_{name}", description)
            for name, description in (
                ("replay_size", "transitions in the replay buffer"),
                ("policy_lag", "mean policy versions between acting and learning"),
                ("critic_loss", "critic loss of the last update"),
                ("actor_loss", "actor loss of the last update"),
                ("updates_per_s", "learner updates per second"),
            )
        }
        self._last_updates = 0

    def record(self, report: dict) -> None:
        updates = int(report["learner_updates"])
        if updates > self._last_updates:
            self._updates.inc(updates - self._last_updates)
            self._last_updates = updates
        self._gauges["replay_size"].set(report["replay_size"])
        self._gauges["policy_lag"].set(report["policy_lag"])
        self._gauges["updates_per_s"].set(report["updates_per_s"])
        for name in ("critic_loss", "actor_loss"):
            if f"loss/{name}" in report:
                self._gauges[name].set(report[f"loss/{name}"])


class DriverMetrics:
    def __init__(self):
        self._steps_per_s = Gauge("mentor_env_steps_per_s", "environment steps per second, all workers")
        self._driving_score = Gauge("mentor_driving_score", "driving score of recent training episodes")
        self._route_completion = Gauge("mentor_route_completion", "route completion of recent episodes")
        self._replaced = Gauge(
            "mentor_replaced_workers",
            "rollout actors replaced after dying or failing (a lost CARLA server, one that never got ready)",
        )

    def record(self, metrics: dict[str, float]) -> None:
        """The runtime's merged report (runtimes/reporting.py)."""
        self._steps_per_s.set(metrics["env_steps_per_s"])
        self._replaced.set(metrics["replaced_workers"])
        if "route_completion" in metrics:
            self._route_completion.set(metrics["route_completion"])
            self._driving_score.set(metrics["driving_score"])
