"""CLIP feedback on BEV images: the action-alignment margin (Found-RL §4.3) and the safety
probability (VL-SAFE), from one image encoding per item.

`clip_margin`: the 30 prompts of the step's (command, speed) context compete in a softmax; the
margin of the executed action over its hardest non-neighbour is the raw score (the learner
normalises it into the reward bonus when it samples). `safety`: the softmax mass of the safe goal
prompts among safe + unsafe ones. The same computation with VLM-RL's positive / negative language
goals gives that paper's semantic reward.
"""

from __future__ import annotations

import numpy as np
import torch

from core.feedback import FeedbackItem, FeedbackResult
from feedback.clip_model import ClipModel
from feedback.clip_prompts import ACTIONS_PER_CONTEXT, action_index, alignment_margin, context_index, prompt_library

CLIP_FIELDS = ("clip_margin", "safety")


class ClipFeedback:
    inputs = frozenset({"image"})

    def __init__(
        self, clip: ClipModel, safe_prompts: tuple[str, ...], unsafe_prompts: tuple[str, ...], max_batch: int = 128
    ):
        if not safe_prompts or not unsafe_prompts:
            raise ValueError(
                "the CLIP safety score needs at least one safe and one unsafe prompt "
                "(feedback.clip.safe_prompts / unsafe_prompts)"
            )
        self.clip = clip
        self._max_batch = max_batch
        self._library = clip.text_embeddings(tuple(prompt_library()))  # [720, D], once per model
        self._goals = clip.text_embeddings(tuple(safe_prompts) + tuple(unsafe_prompts))
        self._num_safe = len(safe_prompts)

    def __call__(self, items: list[FeedbackItem]) -> list[FeedbackResult]:
        scored = [
            i for i, item in enumerate(items) if item.image is not None and any(f in item.wanted for f in CLIP_FIELDS)
        ]
        values: list[dict] = [{} for _ in items]
        for start in range(0, len(scored), self._max_batch):
            part = scored[start : start + self._max_batch]
            self._score([items[i] for i in part], [values[i] for i in part])
        return [FeedbackResult(item.env_id, item.step, v) for item, v in zip(items, values)]

    def _score(self, items: list[FeedbackItem], out: list[dict]) -> None:
        images = self.clip.encode_images(np.stack([item.image for item in items]))
        margins = self.margins(
            images, [item.command for item in items], [item.speed for item in items], [item.action for item in items]
        )
        safety = self.safety(images)
        for item, values, margin, safe in zip(items, out, margins, safety):
            if "clip_margin" in item.wanted:
                values["clip_margin"] = float(margin)
            if "safety" in item.wanted:
                values["safety"] = float(safe)

    def margins(self, images: torch.Tensor, commands, speeds, actions) -> np.ndarray:
        contexts = [context_index(c, s) for c, s in zip(commands, speeds)]
        logits = context_logits(self._library, self.clip.logit_scale, images, contexts)
        return alignment_margin(logits, np.array([action_index(a) for a in actions]))

    def safety(self, images: torch.Tensor) -> np.ndarray:
        probs = torch.softmax(self.clip.logit_scale * images @ self._goals.T, dim=1)
        return probs[:, : self._num_safe].sum(dim=1).clamp(0.0, 1.0).cpu().numpy()

    def image_safety(self, images: np.ndarray) -> np.ndarray:
        """Safety probabilities of uint8 RGB images [B, H, W, 3] (dataset labelling)."""
        return self.safety(self.clip.encode_images(images))


def context_logits(library: torch.Tensor, scale: float, images: torch.Tensor, contexts) -> np.ndarray:
    """[B, 30]: each image embedding against the 30 prompts of its own (command, speed) context.

    library: the 720 prompt embeddings [720, D] in prompt_library() order; images [B, D]."""
    index = torch.as_tensor(np.asarray(contexts), device=images.device)
    anchors = library.view(-1, ACTIONS_PER_CONTEXT, library.shape[-1])[index]  # [B, 30, D]
    return (scale * torch.einsum("bd,bkd->bk", images, anchors)).cpu().numpy()
