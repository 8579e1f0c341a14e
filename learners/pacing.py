"""Pacing learning against collection by one explicit ratio, enforced in both directions (the
models: Acme's SampleToInsertRatio, DreamerV3's train ratio).

samples_per_insert = (batch_size x updates) / transitions inserted after the first min_inserts.
The learner runs the updates the ratio allows (none before min_inserts); the workers wait when
they are more than max_insert_lead transitions ahead of what the ratio expects for the updates
done so far (None: they never wait, and the achieved ratio is what the learner manages).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SampleToInsertRatio:
    samples_per_insert: float
    batch_size: int
    min_inserts: int
    max_insert_lead: int | None = None

    def updates_allowed(self, inserted: int, updates: int) -> int:
        """Updates the ratio allows now, after `inserted` transitions and `updates` updates."""
        fresh = inserted - self.min_inserts
        if fresh < 0:
            return 0
        target = int(self.samples_per_insert * (fresh + self.batch_size) / self.batch_size)
        return max(0, target - updates)

    def inserts_allowed(self, inserted: int, updates: int) -> int | None:
        """Transitions the workers may still insert before they must wait for the learner (<= 0:
        wait now); None when there is no lead limit."""
        if self.max_insert_lead is None:
            return None
        # The fewest inserts at which the ratio allows `updates` updates.
        expected = self.min_inserts + max(
            0, math.ceil(updates * self.batch_size / self.samples_per_insert) - self.batch_size
        )
        return self.max_insert_lead - (inserted - expected)

    def achieved(self, inserted: int, updates: int) -> float:
        """The samples per insert achieved so far (the configured value when the learner keeps up)."""
        fresh = inserted - self.min_inserts + self.batch_size
        return updates * self.batch_size / fresh if fresh > 0 else 0.0
