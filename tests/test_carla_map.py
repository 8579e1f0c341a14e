"""The CARLA map read offline (carla.Map from xodr text): static BEV layers, routing, and parity
with the SUMO net the embedded simulator runs on (Town01 and Town02)."""

import math

import numpy as np
import pytest

from envs.bev import CH_ROAD, EGO_COL, EGO_ROW, PIXELS_PER_METRE, BevRenderer
from envs.carla.parity import TownPair, ego_road_mask, polyline_agreement, road_mask_iou, route_agreement
from envs.carla.routing import LaneGraph, LaneSegment, distance_to_polyline
from envs.carla.town_map import CarlaTownMap
from envs.geometry import wrap_angle
from envs.maps import MapSearch
from envs.types import Control, EgoState, Route, RouteCommand, Snapshot, StopLines, empty_boxes

pytestmark = pytest.mark.sim

_PAIRS: dict[str, TownPair] = {}  # libsumo runs one simulation per process: keep one town open


def _town_pair(town: str) -> TownPair:
    if town not in _PAIRS:
        _close_pairs()
        _PAIRS[town] = TownPair(town)
    return _PAIRS[town]


def _close_pairs() -> None:
    for pair in _PAIRS.values():
        pair.close()
    _PAIRS.clear()


@pytest.fixture(scope="module", autouse=True)
def _close_at_end():
    yield
    _close_pairs()


def _middle_of_longest_lane(town_map: CarlaTownMap) -> np.ndarray:
    seg = max((s for s in town_map.segments.values() if s.junction < 0), key=lambda s: s.length)
    i = len(seg.xy) // 2
    return np.array([seg.xy[i, 0], seg.xy[i, 1], seg.yaw[i]])


def _snapshot(x: float, y: float, yaw: float) -> Snapshot:
    return Snapshot(
        time=0.0,
        ego=EgoState(x, y, yaw, 0.0, 0.0, 0.0, 4.9, 2.1, Control()),
        vehicles=empty_boxes(),
        vehicle_speeds=np.zeros(0),
        walkers=empty_boxes(),
        walker_speeds=np.zeros(0),
        walkers_on_road=np.zeros(0, dtype=bool),
        stop_lines=StopLines.empty(),
        next_light=None,
        stop_zones=empty_boxes(),
        at_stop_sign=False,
        on_drivable=True,
    )


def test_carla_frame_is_mirrored(town01):
    town_map = CarlaTownMap.from_maps(town01)
    assert town_map.from_carla(10.0, 20.0, 30.0) == pytest.approx((10.0, -20.0, math.radians(-30.0)))
    assert town_map.to_carla(*town_map.from_carla(10.0, 20.0, 30.0)) == pytest.approx((10.0, 20.0, 30.0))
    wp = town_map.map.generate_waypoints(50.0)[3]
    key = (wp.road_id, wp.section_id, wp.lane_id)
    x, y, _ = town_map.from_carla(wp.transform.location.x, wp.transform.location.y)
    assert distance_to_polyline(np.array([[x, y]]), town_map.segments[key].xy)[0] < 0.05


def _straight(key, x0, y0, length, successors=(), left=None, right=None, junction=-1):
    xs = np.linspace(0.0, length, int(length) + 1)
    xy = np.stack([x0 + xs, np.full_like(xs, y0)], axis=1)
    return LaneSegment(key, xy, np.zeros(len(xs)), np.full(len(xs), 3.5), junction, tuple(successors), left, right)


def test_lane_change_where_only_the_other_lane_leads_on():
    # Two same-direction lanes; only the left one (y = 3.5) continues to the goal road.
    right, left, goal = (1, 0, -1), (1, 0, -2), (2, 0, -1)
    graph = LaneGraph(
        {
            right: _straight(right, 0.0, 0.0, 60.0, left=left),
            left: _straight(left, 0.0, 3.5, 60.0, successors=[goal], right=right),
            goal: _straight(goal, 60.0, 3.5, 40.0),
        }
    )
    route = graph.plan((right, 10.0), (goal, 20.0))
    assert [k for k, _ in graph.search((right, 10.0), (goal, 20.0))] == [right, left, goal]
    assert RouteCommand.CHANGE_LANE_LEFT in set(route.commands.tolist())
    assert route.xy[0] == pytest.approx([10.0, 0.0]) and route.xy[-1] == pytest.approx([80.0, 3.5])
    assert np.all(np.diff(route.xy[:, 0]) > 0)  # never goes backwards


class _TownChecks:
    """Checks run once per town; subclasses name the conftest fixture that provides the town."""

    town_fixture = ""

    @pytest.fixture
    def town(self, request) -> str:
        return request.getfixturevalue(self.town_fixture)

    @pytest.fixture
    def pair(self, town) -> TownPair:
        return _town_pair(town)

    def test_map_builds_offline_from_xodr(self, town):
        text = MapSearch.from_settings().xodr_path(town).read_text()
        town_map = CarlaTownMap.from_xodr(town, text)
        assert len(town_map.segments) > 50 and len(town_map.graph.intersections) >= 4
        for seg in town_map.segments.values():
            assert np.isfinite(seg.xy).all() and seg.length > 0 and (seg.width > 2.0).all()
            assert np.max(np.linalg.norm(np.diff(seg.xy, axis=0), axis=1)) <= town_map.resolution + 1e-3
        layers = town_map.static_layers
        assert layers.road.any() and set(np.unique(layers.lanes).tolist()) <= {0, 120, 255}
        assert (layers.lanes > 0).any()

    def test_road_under_the_ego_heading_up(self, pair):
        x, y, yaw = _middle_of_longest_lane(pair.carla)
        static = pair.carla.static_layers
        mask = ego_road_mask(static, x, y, yaw)
        assert static.is_drivable(x, y)
        assert (mask[EGO_ROW - 10 : EGO_ROW + 10, EGO_COL - 3 : EGO_COL + 4] == 255).all()
        # The lane runs straight ahead (up the image) for at least 10 m.
        assert (mask[EGO_ROW - int(10 * PIXELS_PER_METRE) : EGO_ROW, EGO_COL] == 255).all()
        # A road of two 4 m lanes: 12 m to the side is off the road, on one side at least.
        side = int(12 * PIXELS_PER_METRE)
        assert mask[EGO_ROW, EGO_COL - side] == 0 or mask[EGO_ROW, EGO_COL + side] == 0
        # The same picture as the BEV renderer's road channel (max-pooled to 96 px).
        masks, _ = BevRenderer(static).render(
            _snapshot(x, y, yaw), Route(np.array([[x, y], [x + 1, y]]), np.zeros(2), np.full(2, 4)), 0
        )
        pooled = mask.reshape(96, 2, 96, 2).max(axis=(1, 3))
        assert np.mean(pooled == masks[CH_ROAD]) > 0.999

    def test_carla_waypoints_land_on_sumo_lanes(self, pair):
        net = pair.network
        assert pair.carla.offset == net.offset
        wps = pair.carla.map.generate_waypoints(10.0)
        rng = np.random.default_rng(0)
        checked = 0
        for i in rng.permutation(len(wps)):
            wp = wps[int(i)]
            around = wp.next(8.0) + wp.previous(8.0)
            # SUMO's junction areas reach a few metres further into the roads than CARLA's.
            if wp.is_junction or any(w.is_junction or w.road_id != wp.road_id for w in around):
                continue
            loc, rot = wp.transform.location, wp.transform.rotation
            x, y, yaw = net.from_carla(loc.x, loc.y, rot.yaw)
            assert pair.carla.from_carla(loc.x, loc.y, rot.yaw) == pytest.approx((x, y, yaw))
            lane_id, _ = net.locate(x, y)
            shape = net.lanes[lane_id].shape
            assert distance_to_polyline(np.array([[x, y]]), shape)[0] < 1.0
            k = int(np.argmin(np.linalg.norm(shape - (x, y), axis=1)))
            d = shape[min(k + 1, len(shape) - 1)] - shape[max(k - 1, 0)]
            assert abs(wrap_angle(math.atan2(d[1], d[0]) - yaw)) < math.radians(10)
            checked += 1
            if checked == 25:
                break
        assert checked == 25

    def test_road_masks_match_the_sumo_net(self, pair):
        iou = pair.iou(pair.sample_poses(20, seed=0))
        # Measured with 200 poses (benchmarks/carla_parity.py): mean 0.99 (Town01), 0.998 (Town02).
        assert iou.mean() >= 0.95 and iou.min() >= 0.85, iou

    def test_routes_follow_the_same_roads(self, pair):
        pairs = pair.sample_route_pairs(10, seed=1)
        results = [polyline_agreement(*(r.xy for r in pair.routes(a, b))) for a, b in pairs]
        agreeing = [min(a, b) >= 0.9 for a, b in results]
        # Benchmarked over 100 pairs: 98% (Town01) and 100% (Town02) of routes agree; the rest
        # are near-ties (within 2% travel time) that the two planners break differently.
        assert np.mean(agreeing) >= 0.9, results

    def test_plan_commands_turn_at_junctions(self, pair):
        seen = set()
        for a, b in pair.sample_route_pairs(10, seed=2):
            route = pair.carla.plan(tuple(a), tuple(b))
            assert route.xy[0] == pytest.approx(a, abs=0.5) and route.xy[-1] == pytest.approx(b, abs=0.5)
            assert np.max(np.diff(route.s)) <= 1.05
            commands = route.commands
            for cmd in (RouteCommand.LEFT, RouteCommand.RIGHT, RouteCommand.STRAIGHT):
                runs = np.flatnonzero(np.diff(np.concatenate([[0], commands == cmd, [0]]).astype(int)))
                for start, stop in zip(runs[::2], runs[1::2]):
                    seen.add(cmd)
                    turn = wrap_angle(float(route.yaw[stop - 1] - route.yaw[start]))
                    if cmd == RouteCommand.LEFT:
                        assert turn > math.radians(45)  # counter-clockwise in Mentor's frame
                    elif cmd == RouteCommand.RIGHT:
                        assert turn < -math.radians(45)
                    else:
                        assert abs(turn) < math.radians(35)
        assert {RouteCommand.LEFT, RouteCommand.RIGHT} <= seen


class TestTown01(_TownChecks):
    town_fixture = "town01"


class TestTown02(_TownChecks):
    town_fixture = "town02"


def test_module_functions_take_carla_coordinates(town01):
    _close_pairs()  # they open a SUMO simulation of their own
    town_map = CarlaTownMap.from_maps(town01)  # no offset: x, -y of CARLA
    x, y, yaw = _middle_of_longest_lane(town_map)
    cx, cy, cyaw = town_map.to_carla(x, y, yaw)
    iou = road_mask_iou(town01, [(cx, cy, cyaw), (cx, cy, cyaw + 90.0)])
    assert iou.shape == (2,) and (iou > 0.9).all()
    seg = town_map.segments[town_map.locate(x, y)[0]]
    goal = town_map.to_carla(*seg.xy[np.searchsorted(seg.s, seg.length - 20.0)])  # clear of SUMO's junction
    assert min(route_agreement(town01, (cx, cy), goal[:2])) >= 0.9
