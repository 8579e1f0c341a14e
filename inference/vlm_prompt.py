"""The driving VLM's text prompt and a strict parser for its JSON answer (Found-RL §4.2).

The VLM sees the 192 px RGB BEV plus this prompt and answers {"throttle", "steer", "brake"}.
Anything that is not exactly such an object is rejected (None), never repaired or defaulted:
the worker turns a missing answer into m = 0.
"""
from __future__ import annotations

import json
import math
import re

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

# One optional ``` or ```json fence around the whole answer, nothing outside it but whitespace.
_FENCE = re.compile(r"\A\s*```(?:[jJ][sS][oO][nN])?[ \t]*\n?(.*?)\n?[ \t]*```\s*\Z", re.DOTALL)


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


def _load_object(text: str) -> dict | None:
    match = _FENCE.match(text)
    body = match.group(1) if match else text
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
    [-1, 1]. Anything else (prose, several objects, lists, NaN/Infinity, duplicate keys) gives None.

    Mapping: acc = -brake if brake > 0.05 else throttle. Brake wins over throttle, with the same
    0.05 threshold the longitudinal discretisation uses; acc < 0 means brake = |acc|, as the
    action contract defines. Steer passes through (positive = right).
    """
    if not isinstance(text, str):
        return None
    obj = _load_object(text)
    if obj is None or set(obj) != ACTION_KEYS or not all(_is_number(v) for v in obj.values()):
        return None
    throttle, steer, brake = float(obj["throttle"]), float(obj["steer"]), float(obj["brake"])
    if not (0.0 <= throttle <= 1.0 and -1.0 <= steer <= 1.0 and 0.0 <= brake <= 1.0):
        return None
    acc = -brake if brake > BRAKE_THRESHOLD else throttle
    return np.array([acc, steer], dtype=np.float32)
