"""Signals and value conversions of the CARLA backend, offline: stop lines read from carla.Map on
Town01/Town02 agree with the SUMO net's, and carla value types convert into Mentor's frame."""

import math

import carla
import numpy as np
import pytest

from envs.carla import readout
from envs.carla.parity import TownPair
from envs.carla.signals import STOP_ZONE_M, lights_on_route, read_signal_lines, stop_zones
from envs.carla.town_map import CarlaTownMap
from envs.route_suites import load_suite, random_route
from envs.types import Control, LightState, Route

pytestmark = pytest.mark.sim

_SUITE = {"Town01": "nocrash_train", "Town02": "nocrash_eval"}


@pytest.fixture(scope="module", params=["Town01", "Town02"])
def pair(request):
    from tests.conftest import _require_town

    town = _require_town(request.param)
    with TownPair(town) as opened:
        yield opened


def test_every_light_line_lies_on_a_sumo_stop_line(pair):
    lines = read_signal_lines(pair.carla)
    lights = [line for line in lines if line.kind == "light"]
    assert len(lights) >= 20
    sumo = pair.network.stop_lines
    for line in lights:
        d = [np.linalg.norm(line.centre - other.centre) for other in sumo]
        nearest = sumo[int(np.argmin(d))]
        # Measured: Town01 max 2.8 m (median 0.5), Town02 max 4.5 m (median 2.2): SUMO puts its
        # stop line where netconvert cuts the junction, CARLA where the connector begins.
        assert min(d) < 5.0, line.landmark_id
        assert float(line.direction @ nearest.direction) > 0.99
        assert line.half_width == pytest.approx(np.linalg.norm(line.segment[:2] - line.segment[2:]) / 2)


def test_routes_meet_the_same_lights_in_both_backends(pair):
    lines = read_signal_lines(pair.carla)
    suite = load_suite(_SUITE[pair.town])
    met = 0
    for spec in suite.routes[:6]:
        sx, sy, _ = pair.carla_to_net(*spec.start)
        gx, gy, _ = pair.carla_to_net(*spec.goal, 0.0)
        carla_route, sumo_route = pair.routes((sx, sy), (gx, gy))
        on_carla = [s for s, _ in lights_on_route(carla_route, lines)]
        on_sumo = [s for s, _ in lights_on_route(sumo_route, lines)]
        assert len(on_carla) == len(on_sumo)
        np.testing.assert_allclose(on_carla, on_sumo, atol=3.0)
        met += len(on_carla)
    assert met >= 6  # the towns' routes cross lit junctions


def test_lights_on_route_ignores_the_opposite_direction():
    lines = _straight_town_lines()
    east = Route(xy=np.stack([np.arange(0.0, 50.0), np.zeros(50)], axis=1), yaw=np.zeros(50), commands=np.full(50, 4))
    west = Route(xy=east.xy[::-1].copy(), yaw=np.full(50, math.pi), commands=np.full(50, 4))
    assert [round(s) for s, _ in lights_on_route(east, lines)] == [20]
    assert lights_on_route(west, lines) == []


def _straight_town_lines():
    from envs.carla.signals import SignalLine

    return [
        SignalLine("1", "light", np.array([20.0, 1.75, 20.0, -1.75]), np.array([1.0, 0.0]), 1.75),
        SignalLine("2", "stop", np.array([30.0, 1.75, 30.0, -1.75]), np.array([1.0, 0.0]), 1.75),
    ]


def test_stop_zone_lies_before_its_line():
    zones = stop_zones(_straight_town_lines())
    np.testing.assert_allclose(zones, [[30.0 - STOP_ZONE_M / 2, 0.0, 0.0, STOP_ZONE_M, 3.5]])


def test_random_routes_plan_on_the_carla_map(pair):
    route = random_route(pair.carla, np.random.default_rng(3))
    planned = pair.carla.plan(pair.carla.from_carla(*route.start)[:2], pair.carla.from_carla(*route.goal)[:2])
    assert 250.0 <= planned.length <= 800.0


# ----- conversions (carla value types, no server) --------------------------------------------


@pytest.fixture(scope="module")
def plain_map():
    from tests.conftest import _require_town

    return CarlaTownMap.from_maps(_require_town("Town01"))


def test_ego_state_mirrors_carla_frame(plain_map):
    # Heading CARLA yaw +90 deg (towards CARLA +y) is -90 deg in Mentor's right-handed frame.
    transform = carla.Transform(carla.Location(x=10.0, y=20.0, z=0.3), carla.Rotation(yaw=90.0))
    box = carla.BoundingBox(carla.Location(x=0.5, y=0.0, z=0.7), carla.Vector3D(2.4, 1.0, 0.8))
    ego = readout.ego_state(
        plain_map,
        transform,
        box,
        carla.Vector3D(0.3, 5.0, 0.0),
        carla.Vector3D(0.0, 2.0, 0.0),
        Control(throttle=0.6, steer=-0.25),
        gear=2,
    )
    # The box sits 0.5 m ahead of the origin: CARLA (10, 20.5) -> Mentor (10, -20.5).
    assert (ego.x, ego.y) == pytest.approx((10.0, -20.5), abs=1e-4)
    assert ego.yaw == pytest.approx(-math.pi / 2)
    assert ego.speed == pytest.approx(5.0, abs=1e-5)
    # CARLA +x is to the ego's left when it faces CARLA +y (left-handed frame).
    assert ego.v_lateral == pytest.approx(0.3, abs=1e-5)
    assert ego.accel == pytest.approx(2.0, abs=1e-5)
    assert (ego.length, ego.width) == pytest.approx((4.8, 2.0))
    assert (ego.control.throttle, ego.control.steer, ego.gear) == pytest.approx((0.6, -0.25, 2))


def test_reversing_reads_as_zero_speed(plain_map):
    transform = carla.Transform(carla.Location(), carla.Rotation(yaw=0.0))
    box = carla.BoundingBox(carla.Location(), carla.Vector3D(2.0, 1.0, 0.8))
    ego = readout.ego_state(plain_map, transform, box, carla.Vector3D(-1.0, 0.0, 0.0), carla.Vector3D(), Control())
    assert ego.speed == 0.0


def test_boxes_and_speeds(plain_map):
    actors = [
        (
            carla.Transform(carla.Location(x=1.0, y=2.0), carla.Rotation(yaw=180.0)),
            carla.BoundingBox(carla.Location(), carla.Vector3D(0.3, 0.3, 0.9)),
            carla.Vector3D(3.0, 4.0, 0.0),
        )
    ]
    boxes, speeds = readout.boxes(plain_map, actors)
    np.testing.assert_allclose(boxes, [[1.0, -2.0, -math.pi, 0.6, 0.6]], atol=1e-6)
    np.testing.assert_allclose(speeds, [5.0])
    empty, none = readout.boxes(plain_map, [])
    assert empty.shape == (0, 5) and none.shape == (0,)


def test_control_round_trip_and_kinds():
    c = readout.vehicle_control(Control(throttle=0.4, steer=0.3, brake=0.0))
    assert (c.throttle, c.steer, c.brake) == pytest.approx((0.4, 0.3, 0.0))
    assert readout.collision_kind("vehicle.tesla.model3") == "vehicle"
    assert readout.collision_kind("walker.pedestrian.0001") == "pedestrian"
    assert readout.collision_kind("static.prop.streetbarrier") == "static"


def test_light_states_and_phase():
    assert readout.light_state(carla.TrafficLightState.Red) == LightState.RED
    assert readout.light_state(carla.TrafficLightState.Off) == LightState.NONE
    assert readout.phase_remaining(carla.TrafficLightState.Green, 2.5, 5.0, 2.0, 10.0) == pytest.approx(0.75)
    assert readout.phase_remaining(carla.TrafficLightState.Red, 9.0, 5.0, 2.0, 10.0) == 0.0
    assert readout.phase_remaining(carla.TrafficLightState.Unknown, 1.0, 5.0, 2.0, 10.0) == 0.0


def test_carla_transform_round_trip(plain_map):
    transform = readout.to_carla_transform(plain_map, 5.0, -7.0, 0.3, z=0.5)
    x, y, yaw = plain_map.from_carla(transform.location.x, transform.location.y, transform.rotation.yaw)
    assert (x, y, yaw) == pytest.approx((5.0, -7.0, 0.3), abs=1e-5)
