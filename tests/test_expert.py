import numpy as np

from envs.expert import expert_action
from envs.types import LightState, Route, RouteCommand
from tests.snapshots import light, snapshot


def straight(length=100, y=0.0):
    xy = np.stack([np.arange(length + 1.0), np.full(length + 1, y)], axis=1)
    return Route(xy=xy, yaw=np.zeros(length + 1), commands=np.full(length + 1, int(RouteCommand.LANE_FOLLOW)))


def test_accelerates_on_a_free_road_and_keeps_straight():
    acc, steer = expert_action(snapshot(speed=2.0), straight(), 0)
    assert acc > 0.1 and abs(steer) < 1e-6


def test_steers_left_towards_a_route_on_its_left():
    acc, steer = expert_action(snapshot(speed=3.0), straight(y=1.5), 0)
    assert steer < -0.05  # negative steer turns left


def test_brakes_behind_a_stopped_vehicle():
    acc, _ = expert_action(snapshot(speed=5.0, vehicles=[(9.0, 0.0, 0.0, 4.6, 1.9)]), straight(), 0)
    assert acc < -0.2


def test_ignores_a_vehicle_in_the_oncoming_lane():
    acc, _ = expert_action(snapshot(speed=3.0, vehicles=[(9.0, 4.0, np.pi, 4.6, 1.9)]), straight(), 0)
    assert acc > 0


def test_stops_for_red_but_not_green():
    route = straight()
    assert expert_action(snapshot(speed=5.0, light=light(LightState.RED, 6.0)), route, 0)[0] < -0.2
    assert expert_action(snapshot(speed=5.0, light=light(LightState.GREEN, 6.0)), route, 0)[0] > -0.05


def test_yields_to_a_pedestrian_crossing_ahead_not_one_on_the_sidewalk():
    route = straight()
    crossing = snapshot(speed=5.0, walkers=[(10.0, 0.5, np.pi / 2, 0.3, 0.5)])
    sidewalk = snapshot(speed=5.0, walkers=[(10.0, 3.5, 0.0, 0.3, 0.5)], walkers_on_road=[False])
    assert expert_action(crossing, route, 0)[0] < -0.2
    assert expert_action(sidewalk, route, 0)[0] > -0.05
