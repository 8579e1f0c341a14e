"""The expert advisor: the privileged rule-based driver behind the feedback-model interface.

The CPU stand-in for the VLM advisor: it answers `vlm_action` with what the expert would do.
"""
from __future__ import annotations

from envs.expert import ExpertParams, expert_action
from inference.feedback import FeedbackItem, FeedbackResult


class ExpertAdvisor:
    inputs = frozenset({"privileged"})

    def __init__(self, params: ExpertParams = ExpertParams()):
        self._params = params

    def __call__(self, items: list[FeedbackItem]) -> list[FeedbackResult]:
        results = []
        for item in items:
            values = {}
            if "vlm_action" in item.wanted and item.privileged is not None:
                snapshot, route = item.privileged
                values["vlm_action"] = expert_action(snapshot, route, 0, self._params)
            results.append(FeedbackResult(item.env_id, item.step, values))
        return results
