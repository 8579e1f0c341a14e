"""The 10-value state vector of the observation (Found-RL / Roach order)."""

from __future__ import annotations

import numpy as np

from envs.reward import light_distance
from envs.types import LightState, Snapshot

STATE_SIZE = 10
STATE_LOW = np.array([0, -1, 0, 0, -50, -50, 0, -1, -1, 0], dtype=np.float32)
STATE_HIGH = np.array([1, 1, 1, 1, 50, 50, 3, 1, 1, 1], dtype=np.float32)


def state_vector(snap: Snapshot) -> np.ndarray:
    """throttle, steer, brake, gear/5, v_x, v_y, light state, light distance ratio,
    light phase remaining, at_stop_sign."""
    ego, light = snap.ego, snap.next_light
    state = light.state if light is not None else LightState.NONE
    distance = light_distance(snap)
    ratio = np.clip(distance - 5.0, 0.0, 5.0) / 5.0 if distance is not None else -1.0
    phase = light.phase_remaining if light is not None else -1.0
    values = [
        ego.control.throttle,
        ego.control.steer,
        ego.control.brake,
        ego.gear / 5.0,
        ego.speed,
        ego.v_lateral,
        float(state),
        ratio,
        phase,
        float(snap.at_stop_sign),
    ]
    return np.clip(np.asarray(values, dtype=np.float32), STATE_LOW, STATE_HIGH)
