"""Transitions waiting for their feedback, keyed by (env, step).

Answers come back in any order and are attached by key only. A row leaves when its env outcome
is known and every wanted field is answered, or when its deadline passes (the missing fields then
stay unavailable: mask 0, never a default). Rows of one stream leave in step order, because the
replay links each row to the next step of its stream.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field

from core.feedback import FeedbackResult, validate


@dataclass
class _Pending:
    row: dict
    wanted: frozenset[str]
    deadline: float
    created: float
    answered: set = field(default_factory=set)
    env_done: bool = False


@dataclass
class FeedbackCounters:
    answered: int = 0  # fields that arrived well-formed and in time
    malformed: int = 0  # fields that arrived but failed validation
    late: int = 0  # answers for rows already shipped (or never known)
    expired: int = 0  # wanted fields still missing at the deadline
    latency_sum_s: float = 0.0
    latency_count: int = 0


class PendingTransitions:
    def __init__(self, deadline_s: float, clock=time.monotonic):
        self._deadline_s = deadline_s
        self._clock = clock
        self._rows: dict[tuple[int, int], _Pending] = {}
        self._order: dict[int, collections.deque[int]] = collections.defaultdict(collections.deque)
        self.counters = FeedbackCounters()
        self.latencies: list[float] = []  # each answer's latency since the last take_latencies()

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, stream: int, step: int, row: dict, wanted: tuple[str, ...] | frozenset[str]) -> None:
        """Register a row whose feedback was just requested (or needs none: wanted empty)."""
        now = self._clock()
        for name in wanted:
            row[f"{name}_mask"] = 0.0
        self._rows[(stream, step)] = _Pending(
            row=row, wanted=frozenset(wanted), deadline=now + self._deadline_s, created=now
        )
        self._order[stream].append(step)

    def complete_env(self, stream: int, step: int, **outcome) -> None:
        """Record what the env step returned (reward, terminated, ...) for the row at (stream, step)."""
        pending = self._rows[(stream, step)]
        pending.row.update(outcome)
        pending.env_done = True

    def attach(self, result: FeedbackResult) -> None:
        pending = self._rows.get(result.key)
        if pending is None:
            self.counters.late += 1
            return
        for name in pending.wanted - pending.answered:
            if name not in result.values:
                continue
            value, ok = validate(name, result.values[name])
            pending.answered.add(name)
            if ok:
                pending.row[name] = value
                pending.row[f"{name}_mask"] = 1.0
                self.counters.answered += 1
                latency = self._clock() - pending.created
                self.counters.latency_sum_s += latency
                self.counters.latency_count += 1
                self.latencies.append(latency)
            else:
                self.counters.malformed += 1
        # A result that answered none of the wanted fields counts as malformed for each of them.
        if not any(name in result.values for name in pending.wanted):
            self.counters.malformed += len(pending.wanted - pending.answered)
            pending.answered |= pending.wanted

    def take_latencies(self) -> list[float]:
        taken, self.latencies = self.latencies, []
        return taken

    def pop_ready(self, expire_all: bool = False) -> list[dict]:
        """Rows that may ship now, each stream's in step order. `expire_all` (a worker that stops)
        treats every deadline as passed: unanswered fields ship unavailable (mask 0) at once."""
        now, out = (math.inf if expire_all else self._clock()), []
        for stream, steps in self._order.items():
            while steps:
                pending = self._rows[(stream, steps[0])]
                complete = pending.answered >= pending.wanted
                if not pending.env_done or not (complete or now >= pending.deadline):
                    break
                if not complete:
                    self.counters.expired += len(pending.wanted - pending.answered)
                out.append(pending.row)
                del self._rows[(stream, steps.popleft())]
        return out

    def oldest_age(self) -> float:
        if not self._rows:
            return 0.0
        # Rows enter in time order, so each stream's head is its oldest.
        return self._clock() - min(self._rows[(s, steps[0])].created for s, steps in self._order.items() if steps)
