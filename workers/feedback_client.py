"""How a rollout worker reaches a feedback model: one client for every mode and every transport.

A transport is a `send(items) -> wait` function: it starts a call for a bundle of items and returns
at once; `wait(timeout_s)` blocks for that call's answers (or raises). Local mode sends to an
`InProcessBatcher` (the model on a background thread); the Ray runtime sends through a Serve
DeploymentHandle (cluster/feedback_service.py). `FeedbackClient` is the same in both: in async mode
a helper thread waits for the calls and the worker polls the answers; in sync mode `submit` waits
(the baseline the async path is measured against).

A failed call (the model raised, a replica died, a time-out) leaves its items unanswered: they
expire at their deadline with mask 0, and the call is counted in `failed_calls`, a metric of its own.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from typing import Callable, Literal

from core import FeedbackModel
from core.feedback import FeedbackItem, FeedbackResult, unexpired

logger = logging.getLogger(__name__)

Wait = Callable[[float], list[FeedbackResult]]
Send = Callable[[list[FeedbackItem]], Wait]


class ResultInbox:
    """Answers handed from a response thread to the worker's thread."""

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


class FeedbackClient:
    def __init__(self, send: Send, mode: Literal["async", "sync"], timeout_s: float):
        self._send = send
        self._sync = mode == "sync"
        self._timeout_s = timeout_s
        self._inbox = ResultInbox()
        self.failed_calls = 0
        self.calls = 0
        self._calls: queue.Queue[Wait | None] = queue.Queue()
        self._thread = None
        if not self._sync:
            self._thread = threading.Thread(target=self._collect, name="feedback-responses", daemon=True)
            self._thread.start()

    def submit(self, items: list[FeedbackItem]) -> None:
        """Send a bundle; returns at once in async mode, after the answers in sync mode."""
        self.calls += 1
        try:
            wait = self._send(items)
        except Exception:  # noqa: BLE001 - a transport that cannot even start the call
            self._failed(len(items))
            return
        if self._sync:
            self._finish(wait, len(items))
        else:
            self._calls.put(wait)

    def poll(self) -> list[FeedbackResult]:
        return self._inbox.take()

    def close(self) -> None:
        if self._thread is not None:
            self._calls.put(None)
            self._thread.join(timeout=self._timeout_s + 1.0)

    def _collect(self) -> None:
        while True:
            wait = self._calls.get()
            if wait is None:
                return
            self._finish(wait, None)

    def _finish(self, wait: Wait, size: int | None) -> None:
        try:
            self._inbox.put(wait(self._timeout_s))
        except Exception:  # noqa: BLE001 - a failed model, a dead replica or a time-out
            self._failed(size)

    def _failed(self, size: int | None) -> None:
        self.failed_calls += 1
        logger.warning(
            "feedback call failed%s; its items will expire unanswered",
            f" ({size} items)" if size else "",
            exc_info=True,
        )


class InProcessBatcher:
    """The model on a background thread, micro-batching the items of submitted bundles (local mode,
    tests): `send(items)` returns a wait function for that bundle's answers."""

    def __init__(self, model: FeedbackModel, max_batch_size: int = 64, batch_wait_s: float = 0.005):
        self._model = model
        self._max_batch = max_batch_size
        self._wait = batch_wait_s
        self._queue: queue.Queue[tuple[list[FeedbackItem], concurrent.futures.Future] | None] = queue.Queue()
        self.batches = 0
        self.skipped_expired = 0  # items already past their deadline when their batch came up
        self._thread = threading.Thread(target=self._serve, name="feedback-model", daemon=True)
        self._thread.start()

    def send(self, items: list[FeedbackItem]) -> Wait:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((list(items), future))
        return lambda timeout_s: future.result(timeout=timeout_s)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5.0)

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            bundles, deadline = [first], time.monotonic() + self._wait
            while sum(len(items) for items, _ in bundles) < self._max_batch:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                bundles.append(nxt)
            self._run(bundles)

    def _run(self, bundles: list[tuple[list[FeedbackItem], concurrent.futures.Future]]) -> None:
        items = unexpired([item for bundle, _ in bundles for item in bundle])
        self.skipped_expired += sum(len(bundle) for bundle, _ in bundles) - len(items)
        try:
            by_key = {result.key: result for result in self._model(items)} if items else {}
        except Exception as exc:  # noqa: BLE001 - every call of the batch fails with it
            for _, future in bundles:
                future.set_exception(exc)
            return
        self.batches += 1
        for bundle, future in bundles:
            future.set_result([by_key[item.key] for item in bundle if item.key in by_key])
