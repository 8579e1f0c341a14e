import math

import pytest

from envs.types import Control
from envs.vehicle_model import KinematicState, VehicleParams, gear_for, longitudinal_accel, pedals_for_accel, step

P = VehicleParams()


def test_full_throttle_from_rest_gains_0_4_m_s_in_one_step():
    state, accel, _ = step(KinematicState(0, 0, 0, 0), Control(throttle=1.0), 0.1, P)
    assert accel == pytest.approx(4.0)  # 4.0 * (1 - 0/25), no resistance at standstill
    assert state.speed == pytest.approx(0.4)
    assert state.x == pytest.approx(0.02)  # mean speed 0.2 m/s * 0.1 s


def test_full_brake_at_10_m_s():
    # -8 (brake) - 0.3 (engine braking) - (0.1 + 1.7e-4 * 100) = -8.417
    assert longitudinal_accel(Control(brake=1.0), 10.0, P) == pytest.approx(-8.417)


def test_braking_never_reverses():
    state, _, _ = step(KinematicState(0, 0, 0, 0.2), Control(brake=1.0), 0.1, P)
    assert state.speed == 0.0


def test_positive_steer_turns_right_clockwise():
    state = KinematicState(0, 0, 0, 5.0)
    for _ in range(10):
        state, _, v_lat = step(state, Control(throttle=0.3, steer=0.5), 0.1, P)
    assert state.yaw < 0 and state.y < 0 and v_lat < 0


@pytest.mark.parametrize("accel,speed", [(1.0, 3.0), (-2.0, 5.0), (0.0, 6.0), (-6.0, 8.0)])
def test_pedals_invert_the_longitudinal_map(accel, speed):
    pedal = pedals_for_accel(accel, speed, P)
    control = Control(throttle=max(pedal, 0.0), brake=max(-pedal, 0.0))
    assert longitudinal_accel(control, speed, P) == pytest.approx(accel, abs=1e-6)


def test_gear_bands():
    assert gear_for(0.0, 0.0) == 0 and gear_for(3.0, 0.5) == 1 and gear_for(12.0, 0.5) == 3
    assert gear_for(60.0, 1.0) == 5
    assert math.isclose(gear_for(0.0, 0.5), 1)
