"""The observation and action contract, defined once (docs/architecture.md §2): everything that stores, batches
or encodes observations takes its sizes from here."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs.bev import BEV_SIZE, MASK_SIZE, NUM_CHANNELS
from envs.observation import STATE_HIGH, STATE_LOW, STATE_SIZE

BEV_SHAPE: tuple[int, int, int] = (NUM_CHANNELS, MASK_SIZE, MASK_SIZE)  # uint8 masks, 15 x 96 x 96
RGB_BEV_SHAPE: tuple[int, int, int] = (BEV_SIZE, BEV_SIZE, 3)  # uint8, the image sent to CLIP / VLMs
ACTION_SIZE = 2  # [acc, steer] in [-1, 1]; acc < 0 brakes, positive steer turns right

__all__ = ["ACTION_SIZE", "BEV_SHAPE", "RGB_BEV_SHAPE", "STATE_SIZE", "action_space", "observation_space"]


def observation_space() -> gym.spaces.Dict:
    return gym.spaces.Dict(
        {
            "bev": gym.spaces.Box(0, 255, BEV_SHAPE, dtype=np.uint8),
            "state": gym.spaces.Box(STATE_LOW, STATE_HIGH, (STATE_SIZE,), dtype=np.float32),
        }
    )


def action_space() -> gym.spaces.Box:
    return gym.spaces.Box(-1.0, 1.0, (ACTION_SIZE,), dtype=np.float32)
