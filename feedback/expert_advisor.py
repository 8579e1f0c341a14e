"""The expert advisor: the privileged rule-based driver behind the feedback-model interface.

The CPU stand-in for the VLM advisor: it answers `vlm_action` with what the expert would do. The
expert's action is a function of the env's ground truth that the env computes once per step
(DrivingEnv.expert_action, shared with the expert_action label and a collection's acting expert);
the worker sends that action as the item's privileged part, so the advisor neither receives the
snapshot and route nor computes the same action a second time.
"""

from __future__ import annotations

import numpy as np

from core.feedback import FeedbackItem, FeedbackResult


class ExpertAdvisor:
    inputs = frozenset({"privileged"})

    def __call__(self, items: list[FeedbackItem]) -> list[FeedbackResult]:
        results = []
        for item in items:
            values = {}
            if "vlm_action" in item.wanted and item.privileged is not None:
                values["vlm_action"] = np.array(item.privileged, dtype=np.float32)
            results.append(FeedbackResult(item.env_id, item.step, values))
        return results
