import pytest

from envs.collision import CollisionEvent
from envs.criteria import Criteria
from envs.metrics import Infraction
from envs.route_tracker import RouteProgress
from envs.types import RouteCommand
from tests.snapshots import snapshot


def progress(lateral=0.0, completion=0.5):
    return RouteProgress(
        index=0, lateral=lateral, heading_error=0.0, completion=completion, command=RouteCommand.LANE_FOLLOW
    )


def test_time_limit_from_route_length():
    assert Criteria(route_length=400.0).time_limit == pytest.approx(60 + 400 / 2.0)


def test_collision_terminates():
    verdict = Criteria(100).check(snapshot(collisions=(CollisionEvent("vehicle", "v1", 3.0),)), progress())
    assert verdict.terminated and verdict.infractions == (Infraction.COLLISION_VEHICLE,)


def test_red_light_and_off_road():
    verdict = Criteria(100).check(snapshot(ran_red_light=True, on_drivable=False), progress())
    assert verdict.terminated and set(verdict.infractions) == {Infraction.RED_LIGHT, Infraction.OFF_ROAD}
    assert verdict.off_lane


def test_blocked_after_90_seconds_below_0_1_m_s():
    criteria = Criteria(100)
    assert not criteria.check(snapshot(speed=0.0, time=10.0), progress()).terminated
    assert not criteria.check(snapshot(speed=0.0, time=99.9), progress()).terminated
    assert criteria.check(snapshot(speed=0.0, time=100.0), progress()).infractions == (Infraction.BLOCKED,)


def test_adaptive_route_deviation():
    criteria = Criteria(100)
    assert not criteria.check(snapshot(), progress(lateral=3.0)).terminated
    assert not criteria.check(snapshot(), progress(lateral=3.5)).terminated  # at the 3.5 m floor
    assert criteria.check(snapshot(), progress(lateral=3.6)).infractions == (Infraction.ROUTE_DEVIATION,)
    # a sudden jump of more than 0.8 m is judged against itself + 0.5 m: tolerated once
    criteria = Criteria(100)
    assert not criteria.check(snapshot(), progress(lateral=4.0)).terminated


def test_completion_and_timeout_truncate():
    verdict = Criteria(100).check(snapshot(), progress(completion=0.995))
    assert verdict.truncated and verdict.route_completed and not verdict.terminated
    verdict = Criteria(100).check(snapshot(time=110.0), progress(completion=0.5))
    assert verdict.truncated and verdict.infractions == (Infraction.TIMEOUT,)


def test_lateral_off_lane():
    assert Criteria(100).check(snapshot(), progress(lateral=2.6)).off_lane
    assert not Criteria(100).check(snapshot(), progress(lateral=1.0)).off_lane
