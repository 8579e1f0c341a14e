import numpy as np
import pytest

from envs.observation import state_vector
from envs.types import LightState
from tests.snapshots import light, snapshot


def test_state_vector_without_light():
    v = state_vector(snapshot(speed=5.0, steer=-0.2))
    assert v.dtype == np.float32 and v.shape == (10,)
    assert v.tolist() == pytest.approx([0.5, -0.2, 0.0, 0.2, 5.0, 0.0, 0.0, -1.0, -1.0, 0.0])


def test_state_vector_with_red_light_nearby():
    # distance 4 + 0.9 * 4.9 = 8.41 -> clip(8.41 - 5, 0, 5) / 5 = 0.682
    v = state_vector(snapshot(light=light(LightState.RED, 4.0, phase_remaining=0.25)))
    assert v[6:9].tolist() == pytest.approx([1.0, 0.682, 0.25])


def test_green_light_has_no_distance_ratio():
    v = state_vector(snapshot(light=light(LightState.GREEN, 4.0, phase_remaining=0.9)))
    assert v[6:9].tolist() == pytest.approx([3.0, -1.0, 0.9])
