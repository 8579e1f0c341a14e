"""Deliberately slow and deliberately faulty feedback models, for tests and benchmarks."""

from __future__ import annotations

import time

import numpy as np

from core import FeedbackModel
from core.feedback import FeedbackItem, FeedbackResult


class SlowModel:
    """Wraps a model and adds a fixed delay per batch (a stand-in for a heavy VLM)."""

    def __init__(self, inner: FeedbackModel, delay_s: float):
        self.inputs = inner.inputs
        self._inner, self._delay_s = inner, delay_s

    def __call__(self, items: list[FeedbackItem]) -> list[FeedbackResult]:
        time.sleep(self._delay_s)
        return self._inner(items)


class FaultyModel:
    """Wraps a model and corrupts a fraction of its answers: NaN, wrong shape, out of range,
    missing, or a whole batch failing with an exception."""

    def __init__(self, inner: FeedbackModel, error_rate: float, seed: int = 0):
        self.inputs = inner.inputs
        self._inner, self._rate = inner, error_rate
        self._rng = np.random.default_rng(seed)

    def __call__(self, items: list[FeedbackItem]) -> list[FeedbackResult]:
        if self._rng.random() < self._rate / 4:
            raise RuntimeError("faulty model: the whole batch failed")
        results = []
        for result in self._inner(items):
            if self._rng.random() < self._rate:
                corrupt = self._rng.choice(["nan", "shape", "range", "missing", "text"])
                bad = {
                    "nan": [np.nan, 0.0],
                    "shape": [0.1, 0.2, 0.3],
                    "range": [3.0, 0.0],
                    "missing": None,
                    "text": "turn left",
                }[corrupt]
                result = FeedbackResult(
                    result.env_id, result.step, {k: bad for k in result.values} if result.values else {}
                )
            results.append(result)
        return results
