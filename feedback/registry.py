"""Feedback models by name, as the config's `feedback.model` names them.

"a+b" combines models: each item goes to every part, and the answers are merged field by field
(each part answers only the fields it knows, e.g. expert: vlm_action, clip: clip_margin and safety).
"""

from __future__ import annotations

import logging

from configs.schema import ClipConfig, FeedbackConfig
from core import FeedbackModel
from core.feedback import FeedbackItem, FeedbackResult
from feedback.expert_advisor import ExpertAdvisor
from feedback.stand_ins import FaultyModel, SlowModel

logger = logging.getLogger(__name__)

_INPUTS = {
    "expert": {"privileged"},
    "slow": {"privileged"},
    "faulty": {"privileged"},
    "clip": {"image"},
    "vlm": {"image"},
    "drivevlm": {"image"},
}


class CombinedModel:
    def __init__(self, parts: list[FeedbackModel]):
        self.parts = parts
        self.inputs = frozenset().union(*(part.inputs for part in parts))

    def __call__(self, items: list[FeedbackItem]) -> list[FeedbackResult]:
        merged = {item.key: {} for item in items}
        for part in self.parts:
            for result in part(items):
                merged[result.key].update(result.values)
        return [FeedbackResult(item.env_id, item.step, merged[item.key]) for item in items]


def build_model(config: FeedbackConfig, seed: int = 0) -> FeedbackModel:
    parts = [_build_one(name, config, seed) for name in config.model.split("+")]
    return parts[0] if len(parts) == 1 else CombinedModel(parts)


def _build_one(name: str, config: FeedbackConfig, seed: int) -> FeedbackModel:
    if name == "expert":
        return ExpertAdvisor()
    if name == "slow":
        return SlowModel(ExpertAdvisor(), config.slow_model_delay_s)
    if name == "faulty":
        return FaultyModel(ExpertAdvisor(), config.faulty_model_error_rate, seed)
    if name == "clip":
        return _clip_model(config)
    if name == "drivevlm":
        return _drivevlm_model(config)
    if name == "vlm":
        from feedback.vlm_advisor import VlmAdvisor

        return VlmAdvisor(config.vlm)
    raise ValueError(
        f"feedback.model part {name!r} has no model to build; use expert, slow, faulty, clip, vlm or drivevlm"
    )


def load_clip(clip: ClipConfig):
    """The CLIP model of a `feedback.clip` section, on its device (auto: a GPU when there is one)."""
    import torch

    from feedback.clip_model import ClipModel, ClipSource

    device = ("cuda" if torch.cuda.is_available() else "cpu") if clip.device == "auto" else clip.device
    return ClipModel.load(ClipSource(clip.arch, clip.pretrained, clip.checkpoint), device=device)


def _clip_model(config: FeedbackConfig) -> FeedbackModel:
    from feedback.clip_feedback import ClipFeedback

    c = config.clip
    return ClipFeedback(load_clip(config.clip), c.safe_prompts, c.unsafe_prompts, max_batch=config.max_batch_size)


def _drivevlm_model(config: FeedbackConfig) -> FeedbackModel:
    """DriveVLM-RL's pathways: feedback.clip's CLIP scores, feedback.vlm's VLM describes gated windows."""
    from feedback.drivevlm_feedback import DriveVlmFeedback
    from feedback.vlm_advisor import VlmAdvisor

    return DriveVlmFeedback.from_config(load_clip(config.clip), VlmAdvisor(config.vlm), config.drivevlm)


def model_inputs(config: FeedbackConfig) -> frozenset[str]:
    """What a worker must put into items for this model (without building it)."""
    if config.model == "none":
        return frozenset()
    return frozenset().union(*(_INPUTS[name] for name in config.model.split("+")))
