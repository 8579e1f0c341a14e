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
    _, steer = expert_action(snapshot(speed=3.0), straight(y=1.5), 0)
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


def test_stops_before_a_pedestrian_waiting_to_cross_but_not_one_facing_away():
    route = straight()
    # Standing still 2.2 m right of the lane centre, 12 m ahead: facing the road it is about to cross.
    waiting = snapshot(speed=5.0, walkers=[(12.0, -2.2, np.pi / 2, 0.3, 0.5)], walkers_on_road=[False])
    facing_away = snapshot(speed=5.0, walkers=[(12.0, -2.2, -np.pi / 2, 0.3, 0.5)], walkers_on_road=[False])
    assert expert_action(waiting, route, 0)[0] < -0.2
    assert expert_action(facing_away, route, 0)[0] > -0.05


def test_keeps_clear_of_the_whole_crossing_in_front_of_a_waiting_pedestrian():
    route = straight()
    # Stopped 5 m before the walker's crossing line: it should not creep onto the crossing.
    stopped = snapshot(speed=0.0, walkers=[(7.5, -2.2, np.pi / 2, 0.3, 0.5)], walkers_on_road=[False])
    assert expert_action(stopped, route, 0)[0] <= 0.0


def test_drives_past_a_waiting_pedestrian_already_beside_its_front():
    # The front bumper (2.45 m ahead of the centre) is at the walker: it waits for the car to pass,
    # so stopping here would stand on its crossing.
    beside = snapshot(speed=2.0, walkers=[(3.0, -2.2, np.pi / 2, 0.3, 0.5)], walkers_on_road=[False])
    assert expert_action(beside, straight(), 0)[0] > 0.0


def test_works_on_a_short_route_excerpt_starting_at_index_0():
    excerpt = straight(length=60)
    acc, steer = expert_action(snapshot(speed=4.0, walkers=[(10.0, 0.3, np.pi / 2, 0.3, 0.5)]), excerpt, 0)
    assert acc < 0.0 and abs(steer) < 1e-6


def test_drives_on_through_a_junction_past_a_pedestrian_waiting_at_its_far_crossing():
    in_junction = straight()
    in_junction.commands[:20] = int(RouteCommand.STRAIGHT)
    waiting = snapshot(speed=5.0, walkers=[(12.0, -2.2, np.pi / 2, 0.3, 0.5)], walkers_on_road=[False])
    assert expert_action(waiting, in_junction, 0)[0] > -0.05
