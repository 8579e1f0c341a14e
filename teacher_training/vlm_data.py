"""Fine-tuning examples for the driving VLM, built from Mentor's datasets (collect.py).

Two tasks, each an (images, prompt, answer) triple:
- action (Found-RL §4.2): the 192 px RGB BEV and the driving prompt (speed, forward vector, route
  command); the answer is the expert's action as JSON (`vlm_prompt.format_action`);
- risk (DriveVLM-RL's dynamic pathway): the last K+1 BEVs of an episode and the risk question; the
  answer is a one-sentence description of the nearest pedestrian near the ego's path, read from the
  newest walker mask of the BEV (ground truth, the same kind of privileged view the gate uses).

Held-out examples are whole blocks of consecutive steps (`HOLDOUT_BLOCK_STEPS`), so neighbouring,
nearly identical frames never sit on both sides of the split.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset.parquet import DatasetError, ParquetDataset
from envs.bev import BEV_SIZE, CH_WALKERS, EGO_COL, EGO_ROW, MASK_SIZE, NUM_HISTORY, PIXELS_PER_METRE
from feedback.vlm_prompt import build_prompt, build_risk_prompt, format_action

HOLDOUT_BLOCK_STEPS = 100  # steps per split block
HOLDOUT_EVERY = 8  # one block in this many is held out (12.5 %; a stream needs 800 steps to hold one out)
REQUIRED_COLUMNS = ("rgb_bev", "command", "forward")

# The walker corridor a risk description speaks of (the mask is ego-centred, heading up).
_MASK_SCALE = MASK_SIZE / BEV_SIZE  # the masks are the 192 px render max-pooled to 96 px
_MASK_PX_PER_M = PIXELS_PER_METRE * _MASK_SCALE  # 2.5
_EGO_COL_MASK, _EGO_ROW_MASK = EGO_COL * _MASK_SCALE, EGO_ROW * _MASK_SCALE  # (48, 76)
RISK_AHEAD_M = (-2.0, 20.0)  # m along the heading: just behind to 20 m ahead
RISK_LATERAL_M = 3.0  # m either side of the heading: the lane and its edges, not the sidewalk
CLEAR = "The road ahead is clear with no obstacles."  # DriveVLM-RL's positive text for the dynamic pathway
_SIDES = ("on the left of", "in", "on the right of")


def _side(lateral_m: float) -> str:
    return _SIDES[0] if lateral_m < -1.0 else _SIDES[2] if lateral_m > 1.0 else _SIDES[1]


def _risk_sentence(ahead_m: int, side: str) -> str:
    urgency = "Danger: a" if ahead_m < 8 else "A"
    return f"{urgency} pedestrian is {ahead_m} metres ahead {side} the ego's path."


def risk_description(bev: np.ndarray) -> str:
    """The risk text for one observation's masks [15, 96, 96]: the nearest walker pixel of the newest
    walker channel inside the corridor, in whole metres ahead and a side; CLEAR when there is none."""
    newest = bev[CH_WALKERS + NUM_HISTORY - 1]
    rows, cols = np.nonzero(newest)
    ahead = (_EGO_ROW_MASK - rows) / _MASK_PX_PER_M
    lateral = (cols - _EGO_COL_MASK) / _MASK_PX_PER_M
    near = (ahead >= RISK_AHEAD_M[0]) & (ahead <= RISK_AHEAD_M[1]) & (np.abs(lateral) <= RISK_LATERAL_M)
    if not near.any():
        return CLEAR
    nearest = np.argmin(np.hypot(ahead[near], lateral[near]))
    return _risk_sentence(max(int(round(ahead[near][nearest])), 0), _side(float(lateral[near][nearest])))


RISK_TEMPLATES_CORPUS = (CLEAR, *(_risk_sentence(d, s) for d in range(0, 21) for s in _SIDES))


@dataclass(frozen=True)
class VlmExample:
    task: str  # "action" or "risk"
    images: tuple[np.ndarray, ...]  # uint8 [192, 192, 3] RGB BEVs, oldest first
    prompt: str
    answer: str
    target: np.ndarray | None = None  # the expert action [acc, steer] (action examples)
    # What the prompt was built from (action examples), for sending the same step as a feedback item
    speed: float = 0.0  # m/s
    forward: tuple[float, float] | None = None
    command: int = 0


def _check_columns(chunk: dict, directory: Path) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in chunk]
    if missing:
        raise DatasetError(
            f"{directory} has no {', '.join(missing)} column(s), which the VLM's prompt needs; it was "
            "collected before they were recorded: collect a new one with "
            "`python collect.py --config configs/collect/vlm.yaml collect.output=<dir>`"
        )


def _held_out(step: int) -> bool:
    return (step // HOLDOUT_BLOCK_STEPS) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1


def _windows(chunk: dict, frames: int) -> Iterator[tuple[int, tuple[int, ...]]]:
    """(row, the rows of its window, oldest first) for every row that is not an episode's last;
    frames before an episode's first are padded with its first."""
    start = 0
    for i in range(len(chunk["step"])):
        if chunk["is_first"][i]:
            start = i
        if chunk["is_last"][i]:
            continue
        yield i, tuple(max(start, i - k) for k in range(frames - 1, -1, -1))


def build_examples(
    directory: str | Path, frames: int = 3, risk_share: float = 0.25, seed: int = 0
) -> tuple[list[VlmExample], list[VlmExample]]:
    """(train, held-out) examples of both tasks from a dataset directory. Every row with an expert
    label gives an action example; risk examples are all windows with a pedestrian in the corridor
    plus as many clear ones, scaled so that they are about `risk_share` of all examples."""
    directory = Path(directory)
    dataset = ParquetDataset(directory)
    rng = np.random.default_rng(seed)
    actions: list[tuple[bool, VlmExample]] = []
    risky: list[tuple[bool, VlmExample]] = []
    clear: list[tuple[bool, VlmExample]] = []
    risk_prompt = build_risk_prompt(frames)
    for shard in dataset.shards:
        chunk = dataset.read_shard(shard, extra=True)
        _check_columns(chunk, directory)
        for i, window in _windows(chunk, frames):
            held = _held_out(int(chunk["step"][i]))
            if chunk["expert_action_mask"][i] > 0:
                target = chunk["expert_action"][i].astype(np.float32)
                speed, command = float(chunk["state"][i][4]), int(chunk["command"][i])
                forward = tuple(float(v) for v in chunk["forward"][i])
                actions.append(
                    (
                        held,
                        VlmExample(
                            "action",
                            (chunk["rgb_bev"][i],),
                            build_prompt(speed, forward, command),
                            format_action(target),
                            target,
                            speed,
                            forward,
                            command,
                        ),
                    )
                )
            text = risk_description(chunk["bev"][i])
            example = VlmExample("risk", tuple(chunk["rgb_bev"][j] for j in window), risk_prompt, text)
            (clear if text == CLEAR else risky).append((held, example))
    if not actions:
        raise DatasetError(
            f"{directory} has no rows with an expert action (expert_action_mask); collect with "
            "workers.record_expert_action: true"
        )
    rng.shuffle(clear)
    rng.shuffle(risky)
    wanted_risk = int(round(risk_share / max(1.0 - risk_share, 1e-6) * len(actions)))
    n_risky = min(len(risky), wanted_risk // 2)
    risk = [*risky[:n_risky], *clear[: max(wanted_risk - n_risky, 0)]] if risk_share > 0 else []
    everything = actions + risk
    train = [example for held, example in everything if not held]
    held_out = [example for held, example in everything if held]
    if not held_out or not train:
        raise DatasetError(
            f"{directory} is too small to hold out a block of {HOLDOUT_BLOCK_STEPS} steps in every "
            f"{HOLDOUT_EVERY}: collect at least {HOLDOUT_BLOCK_STEPS * HOLDOUT_EVERY} steps per stream"
        )
    rng.shuffle(train)
    return train, held_out
