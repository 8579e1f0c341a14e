"""Hand-built Snapshots for the pure-function tests."""

import numpy as np

from envs.types import Control, EgoState, NextLight, Snapshot, StopLines


def snapshot(
    speed=5.0,
    steer=0.0,
    vehicles=(),
    vehicle_speeds=None,
    walkers=(),
    walkers_on_road=None,
    light=None,
    time=0.0,
    on_drivable=True,
    **extra,
) -> Snapshot:
    ego = EgoState(
        x=0.0,
        y=0.0,
        yaw=0.0,
        speed=speed,
        v_lateral=0.0,
        accel=0.0,
        length=4.9,
        width=2.1,
        control=Control(throttle=0.5, steer=steer, brake=0.0),
        gear=1,
    )
    vehicles = np.asarray(vehicles, dtype=float).reshape(-1, 5)
    walkers = np.asarray(walkers, dtype=float).reshape(-1, 5)
    return Snapshot(
        time=time,
        ego=ego,
        vehicles=vehicles,
        vehicle_speeds=np.zeros(len(vehicles)) if vehicle_speeds is None else np.asarray(vehicle_speeds, float),
        walkers=walkers,
        walker_speeds=np.zeros(len(walkers)),
        walkers_on_road=np.ones(len(walkers), bool) if walkers_on_road is None else np.asarray(walkers_on_road),
        stop_lines=StopLines.empty(),
        next_light=light,
        stop_zones=np.zeros((0, 5)),
        at_stop_sign=False,
        on_drivable=on_drivable,
        **extra,
    )


def light(state, distance, phase_remaining=0.5):
    return NextLight(state=state, distance=distance, phase_remaining=phase_remaining)
