"""A scorer for the gym reward wrappers (integrations/gym_rewards.py) that asks a running Serve
feedback app (cluster/feedback_service.py), synchronously: one bundled call per batch.

    ray.init(address="auto")                                  # the cluster the app runs on
    scorer = ServeScorer("mentor-feedback-<run id>")          # or an app you serve.run yourself
    env = FoundationRewardWrapper(envs.make_env(...), scorer, FmRewardConfig())

Keys: the app answers items of all its clients in shared micro-batches and matches answers by
(env_id, step), so each scorer shifts its env ids by a random 64-bit offset of its own and shifts
them back. Deadlines: items expire `timeout_s` after they are sent, so the deployment skips those
nobody waits for any more. A call that fails or times out answers nothing (its items' fields are
unavailable in the wrapper's info); it is counted in `failed_calls` and logged, never retried.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time

from core.feedback import FeedbackItem, FeedbackResult

logger = logging.getLogger(__name__)


class ServeScorer:
    def __init__(self, app_name: str, *, timeout_s: float = 10.0, max_bundle_items: int = 64):
        """`max_bundle_items`: at most the app's feedback.max_batch_size (Serve refuses a request larger
        than one batch); a batch with more items goes out as several bundles, sent together."""
        from ray import serve  # here, not at import: a scorer on a handle you hold needs no Serve client

        try:
            handle = serve.get_app_handle(app_name)
        except Exception as err:  # Serve raises several kinds; all mean "not reachable"
            raise RuntimeError(
                f"no running Serve app named {app_name!r} on this Ray cluster ({err}); start one "
                "(cluster/feedback_service.feedback_app + serve.run(..., name=...)) or pass the "
                "name of a Mentor run's app, mentor-feedback-<run id>"
            ) from err
        self.app_name = app_name
        self._init(handle, timeout_s, max_bundle_items)

    @classmethod
    def from_handle(cls, handle, *, timeout_s: float = 10.0, max_bundle_items: int = 64) -> ServeScorer:
        """A scorer on a DeploymentHandle you already hold (e.g. the one serve.run returned)."""
        scorer = cls.__new__(cls)
        scorer.app_name = getattr(handle, "app_name", None)
        scorer._init(handle, timeout_s, max_bundle_items)
        return scorer

    def _init(self, handle, timeout_s: float, max_bundle_items: int) -> None:
        if timeout_s <= 0 or max_bundle_items < 1:
            raise ValueError(
                f"ServeScorer needs timeout_s > 0 and max_bundle_items >= 1, got {timeout_s}, {max_bundle_items}"
            )
        self._handle = handle
        self.timeout_s, self.max_bundle_items = float(timeout_s), int(max_bundle_items)
        self._offset = secrets.randbits(64) << 32  # this client's env ids: offset + the wrapper's env index
        self.calls = 0  # bundles sent
        self.failed_calls = 0  # bundles that raised or timed out (their items unanswered)

    def __call__(self, items: list[FeedbackItem]) -> list[FeedbackResult]:
        if not items:
            return []
        expires_at = time.time() + self.timeout_s
        sent = [dataclasses.replace(item, env_id=item.env_id + self._offset, expires_at=expires_at) for item in items]
        bundles = [sent[i : i + self.max_bundle_items] for i in range(0, len(sent), self.max_bundle_items)]
        responses = [(len(bundle), self._send(bundle)) for bundle in bundles]  # all in flight together
        results = []
        for size, response in responses:
            results.extend(self._wait(response, size, expires_at))
        return [FeedbackResult(r.env_id - self._offset, r.step, r.values) for r in results]

    def _send(self, bundle: list[FeedbackItem]):
        self.calls += 1
        try:
            return self._handle.remote(bundle)
        except Exception:  # the call could not even start: its items go unanswered
            logger.warning("the Serve feedback call could not start; %d items unanswered", len(bundle), exc_info=True)
            return None

    def _wait(self, response, size: int, expires_at: float) -> list[FeedbackResult]:
        if response is None:
            self.failed_calls += 1
            return []
        try:
            return list(response.result(timeout_s=max(expires_at - time.time(), 0.001)))
        except Exception as err:  # noqa: BLE001 - a time-out, a failed replica or a model error
            self.failed_calls += 1
            logger.warning(
                "the Serve feedback call failed (%s: %s); %d items unanswered", type(err).__name__, err, size
            )
            return []
