"""Feedback models by name, as the config's `feedback.model` names them."""
from __future__ import annotations

from configs.schema import FeedbackConfig
from inference.expert_advisor import ExpertAdvisor
from inference.feedback import FeedbackModel
from inference.test_models import FaultyModel, SlowModel


def build_model(config: FeedbackConfig, seed: int = 0) -> FeedbackModel:
    if config.model == "expert":
        return ExpertAdvisor()
    if config.model == "slow":
        return SlowModel(ExpertAdvisor(), config.slow_model_delay_s)
    if config.model == "faulty":
        return FaultyModel(ExpertAdvisor(), config.faulty_model_error_rate, seed)
    raise ValueError(f"feedback.model = {config.model!r} has no model to build; use expert, slow or faulty")


def model_inputs(config: FeedbackConfig) -> frozenset[str]:
    """What a worker must put into items for this model (without building it)."""
    return frozenset({"privileged"}) if config.model in ("expert", "slow", "faulty") else frozenset()
