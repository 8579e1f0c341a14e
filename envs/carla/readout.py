"""Conversions between CARLA's values (left-handed, degrees, actor origin) and Mentor's
(envs.types: right-handed, radians, box centres). Pure functions of carla value types, which the
wheel constructs without a server, so everything here is tested offline."""

from __future__ import annotations

import math
from collections.abc import Iterable

import carla
import numpy as np

from envs.carla.town_map import CarlaTownMap
from envs.types import Control, EgoState, LightState

_LIGHT_STATES = {
    carla.TrafficLightState.Red: LightState.RED,
    carla.TrafficLightState.Yellow: LightState.YELLOW,
    carla.TrafficLightState.Green: LightState.GREEN,
}


def box_centre(
    town: CarlaTownMap, transform: carla.Transform, bounding_box: carla.BoundingBox
) -> tuple[float, float, float]:
    """(x, y, yaw) of an actor's bounding-box centre (the box can sit off the actor's origin)."""
    centre = transform.transform(bounding_box.location)
    return town.from_carla(centre.x, centre.y, transform.rotation.yaw)


def ego_state(
    town: CarlaTownMap,
    transform: carla.Transform,
    bounding_box: carla.BoundingBox,
    velocity: carla.Vector3D,
    acceleration: carla.Vector3D,
    control: Control,
    gear: int = 0,
) -> EgoState:
    x, y, yaw = box_centre(town, transform, bounding_box)
    forward, left = np.array([math.cos(yaw), math.sin(yaw)]), np.array([-math.sin(yaw), math.cos(yaw)])
    v = np.array([velocity.x, -velocity.y])  # CARLA's y points the other way
    a = np.array([acceleration.x, -acceleration.y])
    return EgoState(
        x=x,
        y=y,
        yaw=yaw,
        speed=max(0.0, float(v @ forward)),
        v_lateral=float(v @ left),
        accel=float(a @ forward),
        length=2.0 * bounding_box.extent.x,
        width=2.0 * bounding_box.extent.y,
        control=control,
        gear=int(gear),
    )


def boxes(
    town: CarlaTownMap, actors: Iterable[tuple[carla.Transform, carla.BoundingBox, carla.Vector3D]]
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [N, 5] and speeds [N] of other actors from (transform, bounding box, velocity)."""
    rows, speeds = [], []
    for transform, bounding_box, velocity in actors:
        rows.append(
            [*box_centre(town, transform, bounding_box), 2.0 * bounding_box.extent.x, 2.0 * bounding_box.extent.y]
        )
        speeds.append(math.hypot(velocity.x, velocity.y))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5), np.asarray(speeds, dtype=np.float64)


def vehicle_control(control: Control) -> carla.VehicleControl:
    """Mentor's control as CARLA's (both steer positive to the right)."""
    return carla.VehicleControl(
        throttle=float(control.throttle), steer=float(control.steer), brake=float(control.brake)
    )


def collision_kind(type_id: str) -> str:
    """The criteria's collision kinds from the other actor's blueprint id."""
    if type_id.startswith("vehicle."):
        return "vehicle"
    if type_id.startswith("walker."):
        return "pedestrian"
    return "static"


def light_state(state: carla.TrafficLightState) -> LightState:
    return _LIGHT_STATES.get(state, LightState.NONE)


def phase_remaining(
    state: carla.TrafficLightState, elapsed_s: float, red_s: float, yellow_s: float, green_s: float
) -> float:
    """Fraction of the current phase still to run, in [0, 1] (0 for an off or unknown light)."""
    duration = {
        carla.TrafficLightState.Red: red_s,
        carla.TrafficLightState.Yellow: yellow_s,
        carla.TrafficLightState.Green: green_s,
    }.get(state, 0.0)
    if duration <= 0.0:
        return 0.0
    return float(np.clip(1.0 - elapsed_s / duration, 0.0, 1.0))


def to_carla_transform(town: CarlaTownMap, x: float, y: float, yaw: float, z: float) -> carla.Transform:
    cx, cy, cyaw = town.to_carla(x, y, yaw)
    return carla.Transform(carla.Location(x=cx, y=cy, z=z), carla.Rotation(yaw=cyaw))
