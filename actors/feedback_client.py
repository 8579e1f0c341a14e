"""How a rollout worker reaches a feedback model without ever waiting for it.

`FeedbackClient` is the narrow interface: `submit` a bundle of items (returns at once), `poll`
the answers that have arrived. `InProcessFeedbackClient` runs the model on a background thread
(local mode and tests); the Ray Serve client lives in cluster/.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Protocol

from inference.feedback import FeedbackItem, FeedbackModel, FeedbackResult

logger = logging.getLogger(__name__)


class FeedbackClient(Protocol):
    def submit(self, items: list[FeedbackItem]) -> None: ...

    def poll(self) -> list[FeedbackResult]: ...

    def close(self) -> None: ...


class ResultInbox:
    """Answers handed from a model or response thread to the worker's thread."""

    def __init__(self):
        self._results: list[FeedbackResult] = []
        self._lock = threading.Lock()

    def put(self, results: list[FeedbackResult]) -> None:
        with self._lock:
            self._results.extend(results)

    def take(self) -> list[FeedbackResult]:
        with self._lock:
            taken, self._results = self._results, []
        return taken


class SyncFeedbackClient:
    """Calls the model inside `submit`: the simulator waits (the baseline the async path beats)."""

    def __init__(self, model: FeedbackModel):
        self._model = model
        self._inbox = ResultInbox()
        self.failed_batches = 0

    def submit(self, items: list[FeedbackItem]) -> None:
        try:
            self._inbox.put(self._model(items))
        except Exception:
            self.failed_batches += 1
            logger.warning("feedback model failed on a batch of %d items", len(items), exc_info=True)

    def poll(self) -> list[FeedbackResult]:
        return self._inbox.take()

    def close(self) -> None:
        pass


class InProcessFeedbackClient:
    """Micro-batches submitted items on a background thread; answers arrive in `poll`.

    A failing batch yields no answers for its items: they expire at their deadline (mask 0).
    """

    def __init__(self, model: FeedbackModel, max_batch_size: int = 64, batch_wait_s: float = 0.005):
        self._model = model
        self._max_batch = max_batch_size
        self._wait = batch_wait_s
        self._queue: queue.Queue[FeedbackItem | None] = queue.Queue()
        self._inbox = ResultInbox()
        self.failed_batches = 0
        self.batches = 0
        self._thread = threading.Thread(target=self._serve, name="feedback-model", daemon=True)
        self._thread.start()

    def submit(self, items: list[FeedbackItem]) -> None:
        for item in items:
            self._queue.put(item)

    def poll(self) -> list[FeedbackResult]:
        return self._inbox.take()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5.0)

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, deadline = [first], time.monotonic() + self._wait
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            self._run(batch)

    def _run(self, batch: list[FeedbackItem]) -> None:
        try:
            results = self._model(batch)
        except Exception:
            self.failed_batches += 1
            logger.warning("feedback model failed on a batch of %d items", len(batch), exc_info=True)
            return
        self.batches += 1
        self._inbox.put(results)
