"""DriveVLM-RL's two reward pathways as a feedback model: answers `semantic_score` = R_static + R_dyn.

Static pathway, every item (DriveVLM-RL project page; DESIGN.md §10):
    R_static = alpha sim(BEV, "The road is clear with no car accidents")
             - beta sim(BEV, "Two cars have collided with each other on the road")
Dynamic pathway, items whose attention gate is open (g_t = 1: a walker near the route ahead,
envs/attention_gate.py); the VLM reads the item's last K+1 frames and writes a risk text l_dyn:
    R_dyn = g_t [alpha sim(BEV, "The road ahead is clear with no obstacles") - beta sim(BEV, l_dyn)]
sim is CLIP's raw cosine similarity of the unit image and text embeddings (no softmax), and BEV is
the item's own image (the window's newest frame). Items with g_t = 0 cost no VLM time: R_dyn = 0.

A gated item whose description is unusable (None, empty, not a string, or the VLM call failed) gets
no score: semantic_score None, which the worker's validation turns into "unavailable" (mask 0).
DriveVLM-RL adds R_dyn exactly when something was detected; answering R_static alone there would
report a hazard-free score for a step the gate flagged as hazardous, so no default stands in.

Per batch: one CLIP image encoding (all scored items), one `describe` call (all gated items), one
CLIP text encoding (their descriptions). The batch is at most feedback.max_batch_size items
(the Serve deployment or InProcessBatcher bounds it).

`describer`: any object with `describe(windows: list[tuple[np.ndarray, ...]]) -> list[str | None]`,
one answer per window (feedback/vlm_advisor.VlmAdvisor in a run; a stand-in in tests).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from core.feedback import VLM_LATENCY, FeedbackItem, FeedbackResult
from feedback.clip_model import ClipModel

logger = logging.getLogger(__name__)

FIELD = "semantic_score"


class Describer(Protocol):
    def describe(self, windows: list[tuple[np.ndarray, ...]]) -> list[str | None]: ...


@dataclass
class DriveVlmCounters:
    items: int = 0  # items scored (static pathway)
    gated_items: int = 0  # ... of which the gate was open (their frames go to the VLM)
    described: int = 0  # gated items with a usable description
    vlm_calls: int = 0  # describe() calls (one per batch with gated items)
    vlm_failures: int = 0  # describe() calls that raised or answered the wrong number of texts
    vlm_latency_sum_s: float = 0.0  # seconds in describe(), summed over calls

    @property
    def vlm_latency_s(self) -> float:
        """Mean seconds per describe() call (per batch)."""
        return self.vlm_latency_sum_s / self.vlm_calls if self.vlm_calls else 0.0


class DriveVlmFeedback:
    inputs = frozenset({"image"})

    def __init__(
        self,
        clip: ClipModel,
        describer: Describer,
        *,
        alpha: float,
        beta: float,
        static_positive: str,
        static_negative: str,
        dynamic_positive: str,
    ):
        self.clip = clip
        self.describer = describer
        self.alpha, self.beta = float(alpha), float(beta)
        self._goals = clip.text_embeddings((static_positive, static_negative, dynamic_positive))  # [3, D]
        self.counters = DriveVlmCounters()

    @classmethod
    def from_config(cls, clip: ClipModel, describer: Describer, config) -> DriveVlmFeedback:
        """`config`: configs.schema.DriveVlmConfig."""
        return cls(
            clip,
            describer,
            alpha=config.alpha,
            beta=config.beta,
            static_positive=config.static_positive,
            static_negative=config.static_negative,
            dynamic_positive=config.dynamic_positive,
        )

    def __call__(self, items: list[FeedbackItem]) -> list[FeedbackResult]:
        values: list[dict] = [{} for _ in items]
        scored = [i for i, item in enumerate(items) if FIELD in item.wanted and item.image is not None]
        if scored:
            self._score([items[i] for i in scored], [values[i] for i in scored])
        return [FeedbackResult(item.env_id, item.step, v) for item, v in zip(items, values)]

    # ----- the pathways ----------------------------------------------------------------------
    def _score(self, items: list[FeedbackItem], out: list[dict]) -> None:
        images = self.clip.encode_images(np.stack([item.image for item in items]))  # [B, D], unit norm
        goals = images @ self._goals.T  # [B, 3] raw cosines
        static = self.alpha * goals[:, 0] - self.beta * goals[:, 1]
        self.counters.items += len(items)
        gated = [k for k, item in enumerate(items) if item.gate]
        self.counters.gated_items += len(gated)
        dynamic: dict[int, float | None] = {k: None for k in gated}  # None: no usable description
        windows = [k for k in gated if items[k].frames]  # a gated item without frames stays unscored
        latency, sent = 0.0, set(windows)
        if windows:
            descriptions, latency = self._describe([tuple(items[k].frames) for k in windows])
            usable = [(k, text) for k, text in zip(windows, descriptions) if _usable(text)]
            if usable:
                texts = self.clip.encode_texts([text.strip() for _, text in usable])  # [G, D], new each batch
                rows = torch.as_tensor([k for k, _ in usable], device=images.device)
                risk = torch.sum(images[rows] * texts, dim=1)  # sim(BEV_k, l_dyn_k)
                r_dyn = self.alpha * goals[rows, 2] - self.beta * risk
                dynamic.update({k: float(r) for (k, _), r in zip(usable, r_dyn.cpu().tolist())})
            self.counters.described += len(usable)
        for k, (values, r_static) in enumerate(zip(out, static.cpu().tolist())):
            if k not in dynamic:  # gate closed: R_dyn = 0
                values[FIELD] = float(r_static)
                continue
            values[FIELD] = None if dynamic[k] is None else float(r_static + dynamic[k])
            if k in sent:
                values[VLM_LATENCY] = latency

    def _describe(self, windows: list[tuple[np.ndarray, ...]]) -> tuple[list[str | None], float]:
        """One VLM call for every gated item of the batch: (descriptions, seconds)."""
        self.counters.vlm_calls += 1
        started = time.monotonic()
        try:
            descriptions = list(self.describer.describe(windows))
        except Exception:  # the VLM failed: its items go unscored, the rest are still answered
            logger.warning(
                "the VLM describer failed on %d windows; their items go unscored", len(windows), exc_info=True
            )
            descriptions = None
        latency = time.monotonic() - started
        self.counters.vlm_latency_sum_s += latency
        if descriptions is not None and len(descriptions) != len(windows):
            logger.warning(
                "the VLM describer answered %d texts for %d windows; their items go unscored",
                len(descriptions),
                len(windows),
            )
            descriptions = None
        if descriptions is None:
            self.counters.vlm_failures += 1
            return [None] * len(windows), latency
        return descriptions, latency

    def report(self) -> dict[str, float]:
        c = self.counters
        return {
            "items": c.items,
            "gated_items": c.gated_items,
            "described": c.described,
            "vlm_calls": c.vlm_calls,
            "vlm_failures": c.vlm_failures,
            "vlm_latency_s": c.vlm_latency_s,
            "gate_rate": c.gated_items / c.items if c.items else 0.0,
        }


def _usable(text) -> bool:
    return isinstance(text, str) and bool(text.strip())
