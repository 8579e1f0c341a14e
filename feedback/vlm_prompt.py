"""The driving VLM's text prompt and a strict parser for its JSON answer (Found-RL §4.2).

The VLM sees the 192 px RGB BEV plus this prompt and answers {"throttle", "steer", "brake"}.
Anything that is not exactly such an object is rejected (None), never repaired or defaulted:
the worker turns a missing answer into m = 0.
"""

from __future__ import annotations

import json
import math

import numpy as np

from envs.types import RouteCommand

ACTION_KEYS = frozenset({"throttle", "steer", "brake"})
# Longitudinal threshold shared with the CLIP discretisation (brake > 0.05 counts as braking).
BRAKE_THRESHOLD = 0.05

_PROMPT_HEAD = (
    "The image is a bird's-eye view of the ego vehicle's surroundings: the ego is the white box "
    "near the bottom centre, heading up. Colours (Roach style): dark grey road, light grey planned "
    "route, magenta lane markings, blue vehicles, cyan pedestrians, green/yellow/red traffic-light "
    "stop lines; paler shapes are older positions."
)
_PROMPT_ASK = (
    'Answer with ONLY a JSON object: {"throttle": float in [0, 1], '
    '"steer": float in [-1, 1] (positive = right), "brake": float in [0, 1]}'
)

_FENCE = "```"
# Longer answers are rejected unread: the engine's output is bounded (feedback.vlm.max_tokens), so a
# longer text is not an answer, and every step below stays linear in a bounded length.
MAX_ANSWER_CHARS = 4096


def _fmt(value: float) -> str:
    # round first and add 0.0 so a tiny negative never prints as "-0.00"
    return f"{round(float(value), 2) + 0.0:.2f}"


def build_prompt(speed: float, forward: tuple[float, float] | None, command: int) -> str:
    """The text prompt for one step; deterministic for equal inputs."""
    if forward is None:
        forward_text = "unknown"
    else:
        forward_text = f"({_fmt(forward[0])}, {_fmt(forward[1])})"
    context = (
        f"Current speed: {_fmt(speed)} m/s. "
        f"Forward vector (CARLA world frame): {forward_text}. "
        f"Route command: {RouteCommand(command).phrase}."
    )
    return f"{_PROMPT_HEAD}\n{context}\n{_PROMPT_ASK}"


def format_action(action: np.ndarray) -> str:
    """The answer the VLM is taught to give for the 2-D action [acc, steer] (the inverse of
    parse_action up to rounding): acc >= 0 is throttle, acc < 0 brake."""
    acc, steer = (float(np.clip(v, -1.0, 1.0)) for v in action)
    return f'{{"throttle": {_fmt(max(acc, 0.0))}, "steer": {_fmt(steer)}, "brake": {_fmt(max(-acc, 0.0))}}}'


RISK_ASK = (
    "The images are the last {n} bird's-eye views of the ego vehicle's surroundings, oldest first, "
    "the ego in the white box heading up, pedestrians in cyan, vehicles in blue. In one sentence, "
    "describe the risk the pedestrians and cyclists near the ego's path pose."
)


def build_risk_prompt(num_frames: int) -> str:
    """The dynamic pathway's question (DriveVLM-RL): a risk description of a window of frames."""
    return RISK_ASK.format(n=num_frames)


def _reject_constant(name: str):
    # json.loads accepts NaN / Infinity / -Infinity by default; they are not JSON.
    raise ValueError(f"non-JSON constant {name}")


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict:
    # A duplicated key would silently keep the last value; treat it as malformed instead.
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _is_number(value: object) -> bool:
    # bool is an int subclass in Python, but `true` is not a JSON number
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # a huge integer literal does not fit a float
        return False


def _unfence(text: str) -> str | None:
    """The answer without one optional ``` or ```json fence around all of it (nothing outside the
    fence but whitespace); None for an unclosed fence. Plain string operations, linear in the
    length: a regular expression here backtracked quadratically on a fence followed by blanks."""
    body = text.strip()
    if not body.startswith(_FENCE):
        return body
    if len(body) < 2 * len(_FENCE) or not body.endswith(_FENCE):
        return None
    inner = body[len(_FENCE) : -len(_FENCE)]
    return inner[4:] if inner[:4].lower() == "json" else inner


def _load_object(text: str) -> dict | None:
    body = _unfence(text)
    if body is None:
        return None
    try:
        obj = json.loads(body, parse_constant=_reject_constant, object_pairs_hook=_unique_pairs)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; so is "Extra data"
        return None
    return obj if isinstance(obj, dict) else None


def parse_action(text: str) -> np.ndarray | None:
    """Strictly parse a VLM answer into the 2-D action float32 [acc, steer], or None.

    Accepted: one JSON object, optionally surrounded by whitespace and optionally wrapped in a
    single ```json ... ``` (or ``` ... ```) fence, with exactly the keys throttle, steer, brake,
    each a finite JSON number (not a bool or string), throttle and brake in [0, 1], steer in
    [-1, 1]. Anything else (prose, several objects, lists, NaN/Infinity, duplicate keys, a non-string,
    a text over MAX_ANSWER_CHARS) gives None. Time is linear in the text's length.

    Mapping: acc = -brake if brake > 0.05 else throttle. Brake wins over throttle, with the same
    0.05 threshold the longitudinal discretisation uses; acc < 0 means brake = |acc|, as the
    action contract defines. Steer passes through (positive = right).
    """
    if not isinstance(text, str) or len(text) > MAX_ANSWER_CHARS:
        return None
    obj = _load_object(text)
    if obj is None or set(obj) != ACTION_KEYS or not all(_is_number(v) for v in obj.values()):
        return None
    throttle, steer, brake = float(obj["throttle"]), float(obj["steer"]), float(obj["brake"])
    if not (0.0 <= throttle <= 1.0 and -1.0 <= steer <= 1.0 and 0.0 <= brake <= 1.0):
        return None
    acc = -brake if brake > BRAKE_THRESHOLD else throttle
    return np.array([acc, steer], dtype=np.float32)
