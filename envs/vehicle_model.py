"""Ego dynamics for the embedded simulator: a kinematic bicycle with a throttle/brake map.

Pure functions of state and control, shared by the SUMO backend and the expert (which inverts
the longitudinal map to turn a desired acceleration into throttle or brake).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from envs.types import Control


@dataclass(frozen=True)
class VehicleParams:
    """Defaults approximate CARLA's Lincoln MKZ 2017, the Roach/Found-RL ego."""

    length: float = 4.9
    width: float = 2.1
    wheelbase: float = 2.875
    max_steer_rad: float = 0.7
    max_throttle_accel: float = 4.0  # m/s^2 at standstill with full throttle
    top_speed: float = 25.0  # m/s where throttle stops adding speed
    max_brake_decel: float = 8.0  # m/s^2 at full brake
    rolling_decel: float = 0.1  # m/s^2 (g * Cr of the energy model)
    drag_coeff: float = 1.7e-4  # 1/m: 0.5 rho Cd A / m of the energy model
    engine_brake_decel: float = 0.3  # m/s^2 when coasting without throttle


@dataclass(frozen=True)
class KinematicState:
    x: float
    y: float
    yaw: float  # rad, counter-clockwise
    speed: float  # m/s, >= 0


def resistive_decel(speed: float, p: VehicleParams) -> float:
    if speed <= 0.0:
        return 0.0
    return p.rolling_decel + p.drag_coeff * speed * speed


def longitudinal_accel(control: Control, speed: float, p: VehicleParams) -> float:
    """Acceleration (m/s^2) the throttle/brake pedals produce at this speed."""
    traction = control.throttle * p.max_throttle_accel * max(0.0, 1.0 - speed / p.top_speed)
    coasting = p.engine_brake_decel if control.throttle <= 0.0 and speed > 0.0 else 0.0
    return traction - control.brake * p.max_brake_decel - coasting - resistive_decel(speed, p)


def pedals_for_accel(accel: float, speed: float, p: VehicleParams) -> float:
    """Inverse of `longitudinal_accel`: the signed pedal value (throttle > 0, brake < 0)."""
    drag = resistive_decel(speed, p)
    traction_gain = p.max_throttle_accel * max(1e-3, 1.0 - speed / p.top_speed)
    throttle = (accel + drag) / traction_gain
    if throttle > 0.0:
        return min(throttle, 1.0)
    brake = -(accel + drag + (p.engine_brake_decel if speed > 0.0 else 0.0)) / p.max_brake_decel
    return -min(max(brake, 0.0), 1.0)


def step(state: KinematicState, control: Control, dt: float, p: VehicleParams) -> tuple[KinematicState, float, float]:
    """Advance by dt. Returns (new state, acceleration, lateral velocity in the ego frame)."""
    accel = longitudinal_accel(control, state.speed, p)
    new_speed = max(0.0, state.speed + accel * dt)
    accel = (new_speed - state.speed) / dt
    mean_speed = 0.5 * (state.speed + new_speed)
    # Positive steer turns right (CARLA convention), i.e. clockwise in this right-handed frame.
    delta = -max(-1.0, min(1.0, control.steer)) * p.max_steer_rad
    slip = math.atan(0.5 * math.tan(delta))  # centre of mass half-way along the wheelbase
    heading = state.yaw + slip
    yaw = state.yaw + mean_speed / (0.5 * p.wheelbase) * math.sin(slip) * dt
    x = state.x + mean_speed * math.cos(heading) * dt
    y = state.y + mean_speed * math.sin(heading) * dt
    yaw = math.atan2(math.sin(yaw), math.cos(yaw))
    return KinematicState(x, y, yaw, new_speed), accel, new_speed * math.sin(slip)


def gear_for(speed: float, throttle: float) -> int:
    """An automatic gearbox's gear (0 = neutral at standstill, 1..5 by speed band)."""
    if speed < 0.1 and throttle <= 0.0:
        return 0
    return min(5, 1 + int(speed // 5.0))
