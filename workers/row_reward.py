"""What a rollout worker writes as a row's reward: the env's, or DriveVLM-RL's synthesized one.

`make_row_reward(config)` is the one place that chooses: a run whose workers ask for the
`semantic_score` feedback (feedback.model: drivevlm) gets `DriveVlmReward`, every other run
`EnvReward`, which changes nothing. The worker calls the same hooks on either:

    start_episode(info)            after every env reset
    item_fields(info, truth)       extra FeedbackItem fields for the observation being sent
    after_step(info, terminated)   extra row fields from the env step (kept until the row ships)
    on_result(result)              every feedback answer, before it is attached
    finish(row)                    a row leaving the pending set, before it is shipped
    report()                       entries of the worker's feedback report

DriveVLM-RL (DESIGN.md §10; envs/semantic_reward.py for the formulas and their sources) replaces
the env reward of every transition row with r_speed f_center f_angle f_stability, or the penalty
when a failure ended the episode at that step (VLM-RL's code gives penalty_reward -10 on every
terminal failure: collision, off track, stopped, too fast; Mentor's `terminated` is the same: a
failure criterion ended the episode). The score comes from the observation the action was taken
from (the image sent with the row's item); the speed, lane factors and termination from the step's
result, as VLM-RL reads them from the env's info after the step.

A row whose semantic_score is unavailable (mask 0: expired, malformed, or a gated item the VLM
could not describe) takes R_norm = 1: the plain target speed v_max, no semantic slowdown, which is
VLM-RL's reward without the language term. Such rows are counted (`unscored_steps`) so that a
run can tell how much of its reward had no semantic part. semantic_score and its mask never reach
the replay (learners/replay.ROW_SPEC has no such field): `finish` takes them out of the row.

The episode return a worker reports (episodes.csv) stays the env's return, comparable across runs.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np

from configs.schema import Config, DriveVlmConfig
from core.feedback import VLM_LATENCY, FeedbackResult
from envs.attention_gate import attention_gate
from envs.semantic_reward import CenterHistory, StepFactors, synthesize

FIELD = "semantic_score"  # the feedback field the reward is made of (feedback/drivevlm_feedback.py)
_FACTORS = "_drivevlm_factors"  # the step's StepFactors in a pending row, removed before shipping

GroundTruth = Callable[[], tuple]  # () -> (snapshot, route ahead of the ego)


class EnvReward:
    """The env's reward as it is (every run without the DriveVLM-RL reward)."""

    def start_episode(self, info: dict) -> None:
        pass

    def item_fields(self, info: dict, ground_truth: GroundTruth) -> dict:
        return {}

    def after_step(self, info: dict, terminated: bool) -> dict:
        return {}

    def on_result(self, result: FeedbackResult) -> None:
        pass

    def finish(self, row: dict) -> dict:
        return row

    def report(self) -> dict:
        return {}


class DriveVlmReward(EnvReward):
    def __init__(self, config: DriveVlmConfig):
        self.config = config
        self._frames: collections.deque[np.ndarray] = collections.deque(maxlen=config.history_frames + 1)
        self._centre = CenterHistory(config.stability_window)
        self.requested_items = 0  # items sent (each asks for the score)
        self.gated_items = 0  # ... whose gate was open (they carry frames)
        self.synthesized_steps = 0  # transition rows whose reward was synthesized
        self.unscored_steps = 0  # ... that had no score and used R_norm = 1 (catastrophic rows not counted)
        self.vlm_answers = 0  # answers of gated items that came with the VLM call's latency
        self.vlm_latency_sum_s = 0.0

    def start_episode(self, info: dict) -> None:
        self._frames.clear()
        self._frames.append(info["rgb_bev"])
        self._centre.reset()

    def window(self) -> tuple[np.ndarray, ...]:
        """The last K+1 RGB BEVs, oldest first, the first frame of the episode repeated in front
        while fewer have been seen."""
        missing = self._frames.maxlen - len(self._frames)
        return (self._frames[0],) * missing + tuple(self._frames)

    def item_fields(self, info: dict, ground_truth: GroundTruth) -> dict:
        snapshot, route_ahead = ground_truth()
        gate = attention_gate(
            snapshot, route_ahead, max_ahead=self.config.gate_ahead, max_lateral=self.config.gate_lateral
        )
        self.requested_items += 1
        self.gated_items += gate
        return {"gate": gate, "frames": self.window() if gate else None}

    def after_step(self, info: dict, terminated: bool) -> dict:
        self._frames.append(info["rgb_bev"])
        std = self._centre.push(info["lateral"])
        return {_FACTORS: StepFactors.from_info(info, std, terminated)}

    def on_result(self, result: FeedbackResult) -> None:
        latency = result.values.get(VLM_LATENCY)
        if isinstance(latency, (int, float)) and np.isfinite(latency):
            self.vlm_answers += 1
            self.vlm_latency_sum_s += float(latency)

    def finish(self, row: dict) -> dict:
        factors = row.pop(_FACTORS, None)
        score, mask = row.pop(FIELD, None), row.pop(f"{FIELD}_mask", 0.0)
        if factors is None:  # an is_last row, or the bridge of a simulator failure: no transition to reward
            return row
        available = mask == 1.0 and score is not None
        if not available and not factors.catastrophic:
            self.unscored_steps += 1
        row["reward"] = np.float32(synthesize(float(score) if available else None, factors, self.config))
        self.synthesized_steps += 1
        return row

    def report(self) -> dict:
        return {
            "requested_items": self.requested_items,
            "gated_items": self.gated_items,
            "gate_rate": self.gated_items / self.requested_items if self.requested_items else 0.0,
            "synthesized_steps": self.synthesized_steps,
            "unscored_steps": self.unscored_steps,
            "vlm_answers": self.vlm_answers,
            "vlm_latency_sum_s": self.vlm_latency_sum_s,
            "vlm_latency_s": self.vlm_latency_sum_s / self.vlm_answers if self.vlm_answers else 0.0,
        }


def synthesizes_reward(config: Config) -> bool:
    """DriveVLM-RL's reward (which keeps a window of RGB BEVs) where the workers ask for semantic_score."""
    return FIELD in config.feedback.wanted


def make_row_reward(config: Config) -> EnvReward:
    """DriveVLM-RL's reward where the workers ask for semantic_score, else the env's."""
    if synthesizes_reward(config):
        return DriveVlmReward(config.feedback.drivevlm)
    return EnvReward()
