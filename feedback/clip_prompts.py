"""Conditional Contrastive Action Alignment (Found-RL §4.3): the prompt library and the margin.

720 prompts = 6 route commands x 4 speed bins x 6 longitudinal x 5 lateral behaviours. For a step,
only the 30 prompts of its (command, speed bin) context compete in the softmax; the score is the
probability of the executed action's prompt minus the best non-neighbouring one (neighbours are
intensity variants of the same manoeuvre), floored at 0. Pure numpy: the CLIP model that produces
the logits lives elsewhere.
"""

from __future__ import annotations

import numpy as np

from envs.types import RouteCommand

COMMANDS = tuple(RouteCommand)  # in RouteCommand order (1..6)
SPEED_PHRASES = (
    "The car is currently stopped",
    "The car is moving slowly",
    "The car is driving at a moderate speed",
    "The car is driving at a high speed",
)
LONGITUDINAL = ("braking hard", "braking", "accelerating fast", "accelerating", "accelerating gently", "idling")
LATERAL = ("going straight", "turning left sharply", "turning left", "turning right sharply", "turning right")
ACTIONS_PER_CONTEXT = len(LONGITUDINAL) * len(LATERAL)  # 30
# Intensity groups: confusing "braking" with "braking hard" is a near miss, not a contradiction.
_LONGITUDINAL_GROUP = (0, 0, 1, 1, 1, 2)
_LATERAL_GROUP = (0, 1, 1, 2, 2)


def speed_bin(speed: float) -> int:
    """Found-RL Table 9 (m/s): < 0.1 stopped, < 2.0 slow, < 4.5 moderate, else high."""
    return 0 if speed < 0.1 else 1 if speed < 2.0 else 2 if speed < 4.5 else 3


def longitudinal_bin(throttle: float, brake: float) -> int:
    """Found-RL Table 10: brake > 0.5 hard, > 0.05 braking; throttle > 0.8 fast, > 0.3, > 0.05 gently; else idling."""
    if brake > 0.5:
        return 0
    if brake > 0.05:
        return 1
    if throttle > 0.8:
        return 2
    if throttle > 0.3:
        return 3
    if throttle > 0.05:
        return 4
    return 5


def lateral_bin(steer: float) -> int:
    """Found-RL Table 11 (positive steer turns right): |steer| < 0.05 straight, beyond 0.3 sharply."""
    if abs(steer) < 0.05:
        return 0
    if steer < -0.3:
        return 1
    if steer < 0.0:
        return 2
    if steer > 0.3:
        return 3
    return 4


def action_index(action: np.ndarray) -> int:
    """Index (0..29) of a 2-D action [acc, steer] among its context's 30 behaviours."""
    acc, steer = float(action[0]), float(action[1])
    return longitudinal_bin(max(acc, 0.0), max(-acc, 0.0)) * len(LATERAL) + lateral_bin(steer)


def context_index(command: int, speed: float) -> int:
    """Which of the 24 (command, speed bin) contexts a step belongs to."""
    return COMMANDS.index(RouteCommand(command)) * len(SPEED_PHRASES) + speed_bin(speed)


def prompt(command: RouteCommand, speed_index: int, lon: int, lat: int) -> str:
    return (
        f"Command is to {command.phrase}. {SPEED_PHRASES[speed_index]}. "
        f"Action behavior: The car is {LONGITUDINAL[lon]} and {LATERAL[lat]}."
    )


def prompt_library() -> list[str]:
    """All 720 prompts; context c owns rows [30 c, 30 c + 30), ordered (longitudinal, lateral)."""
    return [
        prompt(cmd, spd, lon, lat)
        for cmd in COMMANDS
        for spd in range(len(SPEED_PHRASES))
        for lon in range(len(LONGITUDINAL))
        for lat in range(len(LATERAL))
    ]


def neighbour_mask() -> np.ndarray:
    """[30, 30] bool: behaviour j is a neighbour of i (same longitudinal and lateral group)."""
    lon = np.repeat(_LONGITUDINAL_GROUP, len(LATERAL))
    lat = np.tile(_LATERAL_GROUP, len(LONGITUDINAL))
    return (lon[:, None] == lon[None, :]) & (lat[:, None] == lat[None, :])


def alignment_margin(logits: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """raw = max(0, p[a] - max over non-neighbours of a of p), p = softmax over the 30 context prompts.

    logits: [B, 30] image-text similarities of each step's own context; actions: [B] indices.
    """
    logits = np.asarray(logits, dtype=np.float64)
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = z / z.sum(axis=1, keepdims=True)
    rows = np.arange(len(p))
    rivals = np.where(neighbour_mask()[actions], -np.inf, p)
    return np.maximum(0.0, p[rows, actions] - rivals.max(axis=1))
