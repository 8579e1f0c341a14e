"""BEV rendering: hand-checkable geometry at 5 px/m, ego at (col 96, row 152) of 192 px."""

from __future__ import annotations

import numpy as np
import pytest

from envs.bev import (
    BEV_SIZE,
    CH_LANES,
    CH_LIGHTS,
    CH_ROAD,
    CH_ROUTE,
    CH_VEHICLES,
    CH_WALKERS,
    COLOR_GREEN,
    COLOR_RED,
    COLOR_ROAD,
    COLOR_VEHICLE,
    COLOR_WALKER,
    COLOR_YELLOW,
    MASK_SIZE,
    BevRenderer,
    StaticLayers,
    masks_to_rgb,
    max_pool2x2,
    render_static_layers,
    world_to_pixel,
)
from envs.geometry import box_corners
from envs.types import EgoState, LightState, Route, RouteCommand, Snapshot, StopLines

NO_BOXES = np.zeros((0, 5))


def make_snapshot(
    ego_xy=(0.0, 0.0),
    ego_yaw=0.0,
    vehicles=NO_BOXES,
    walkers=NO_BOXES,
    stop_lines: StopLines | None = None,
    stop_zones=NO_BOXES,
) -> Snapshot:
    vehicles, walkers = np.asarray(vehicles, float).reshape(-1, 5), np.asarray(walkers, float).reshape(-1, 5)
    return Snapshot(
        time=0.0,
        ego=EgoState(x=ego_xy[0], y=ego_xy[1], yaw=ego_yaw, speed=0.0, v_lateral=0.0, accel=0.0, length=4.5, width=2.0),
        vehicles=vehicles,
        vehicle_speeds=np.zeros(len(vehicles)),
        walkers=walkers,
        walker_speeds=np.zeros(len(walkers)),
        walkers_on_road=np.zeros(len(walkers), dtype=bool),
        stop_lines=stop_lines if stop_lines is not None else StopLines.empty(),
        next_light=None,
        stop_zones=np.asarray(stop_zones, float).reshape(-1, 5),
        at_stop_sign=False,
        on_drivable=True,
    )


def make_route(waypoints) -> Route:
    """Dense (about 1 m) route through the given corner points."""
    pts = [np.asarray(waypoints[0], float)[None]]
    for a, b in zip(waypoints[:-1], waypoints[1:]):
        a, b = np.asarray(a, float), np.asarray(b, float)
        n = max(1, int(round(np.linalg.norm(b - a))))
        pts.append(a + (b - a) * np.linspace(0, 1, n + 1)[1:, None])
    xy = np.concatenate(pts)
    d = np.diff(xy, axis=0, append=xy[-1:] + (xy[-1:] - xy[-2:-1]))
    return Route(xy, np.arctan2(d[:, 1], d[:, 0]), np.full(len(xy), int(RouteCommand.LANE_FOLLOW)))


FAR_ROUTE = make_route([(1000.0, 1000.0), (1010.0, 1000.0)])  # out of view


@pytest.fixture
def empty_static() -> StaticLayers:
    return render_static_layers([], [])


def render_one(renderer: BevRenderer, snap: Snapshot, route: Route = FAR_ROUTE, route_index: int = 0):
    renderer.push(snap)
    return renderer.render(snap, route, route_index)


# --- world_to_pixel / box_corners -------------------------------------------------------------


def test_world_to_pixel_yaw_zero():
    np.testing.assert_allclose(world_to_pixel(np.array([10.0, 0.0]), 0, 0, 0), [96, 102], atol=1e-9)
    np.testing.assert_allclose(world_to_pixel(np.array([0.0, -4.0]), 0, 0, 0), [116, 152], atol=1e-9)
    np.testing.assert_allclose(world_to_pixel(np.array([0.0, 4.0]), 0, 0, 0), [76, 152], atol=1e-9)


def test_world_to_pixel_facing_north_and_offset_ego():
    ex, ey = 30.0, -7.0
    pts = np.array([[ex, ey + 10.0], [ex + 4.0, ey], [ex, ey]])
    np.testing.assert_allclose(world_to_pixel(pts, ex, ey, np.pi / 2), [[96, 102], [116, 152], [96, 152]], atol=1e-9)


def test_world_to_pixel_batched_shape():
    assert world_to_pixel(np.zeros((3, 4, 2)), 0, 0, 0).shape == (3, 4, 2)


def test_box_corners():
    corners = box_corners(np.array([[1.0, 2.0, 0.0, 4.0, 2.0], [0.0, 0.0, np.pi / 2, 4.0, 2.0]]))
    assert corners.shape == (2, 4, 2)
    np.testing.assert_allclose(corners[0], [[3, 3], [3, 1], [-1, 1], [-1, 3]], atol=1e-9)
    np.testing.assert_allclose(corners[1], [[-1, 2], [1, 2], [1, -2], [-1, -2]], atol=1e-9)


# --- shapes, ego, pooling ---------------------------------------------------------------------


def test_shapes_dtypes_and_ego_only_in_rgb(empty_static):
    masks, rgb = render_one(BevRenderer(empty_static), make_snapshot())
    assert masks.shape == (15, MASK_SIZE, MASK_SIZE) and masks.dtype == np.uint8
    assert rgb.shape == (BEV_SIZE, BEV_SIZE, 3) and rgb.dtype == np.uint8
    assert not masks.any()  # the ego is never drawn in the masks
    assert (rgb[150:155, 94:99] == 255).all()  # white ego box around (96, 152)
    assert (rgb[100] == 0).all()  # 10 m ahead: nothing


def test_max_pool_keeps_thin_lines_and_matches_reference():
    masks = np.zeros((15, BEV_SIZE, BEV_SIZE), np.uint8)
    masks[2, 101, :] = 255  # 1-px horizontal line
    masks[5, :, 37] = 120  # 1-px vertical line
    pooled = max_pool2x2(masks)
    assert pooled.shape == (15, 96, 96)
    assert (pooled[2, 50] == 255).all() and pooled[2].sum() == 255 * 96
    assert (pooled[5, :, 18] == 120).all()
    rand = np.random.default_rng(0).integers(0, 256, (15, BEV_SIZE, BEV_SIZE), dtype=np.uint8)
    np.testing.assert_array_equal(max_pool2x2(rand), rand.reshape(15, 96, 2, 96, 2).max(axis=(2, 4)))


# --- vehicles and history ---------------------------------------------------------------------


def test_vehicle_only_in_current_frame(empty_static):
    renderer = BevRenderer(empty_static)
    for _ in range(15):
        renderer.push(make_snapshot())
    masks, _ = render_one(renderer, make_snapshot(vehicles=[[10.0, 0.0, 0.0, 4.0, 2.0]]))
    assert masks[CH_VEHICLES + 3, 51, 48] == 255
    assert not masks[CH_VEHICLES : CH_VEHICLES + 3].any()
    assert not masks[CH_WALKERS:].any()


def test_history_uses_past_positions(empty_static):
    renderer = BevRenderer(empty_static)
    for k in range(16):  # the vehicle drives +x, 1 m per frame
        snap = make_snapshot(vehicles=[[10.0 + k, 0.0, 0.0, 2.0, 2.0]])
        renderer.push(snap)
    masks, rgb = renderer.render(snap, FAR_ROUTE, 0)
    # Rows at 192 px: 152 - 5 * x; t-15 -> x=10, t-10 -> 15, t-5 -> 20, t -> 25.
    for slot, x in enumerate((10.0, 15.0, 20.0, 25.0)):
        rows = np.flatnonzero(masks[CH_VEHICLES + slot, :, 48])
        assert rows.size and abs(rows.mean() - (152 - 5 * x) / 2) <= 1.0, (slot, rows)
    # Older frames are tinted towards white: factor 0.6 for the oldest.
    np.testing.assert_array_equal(rgb[102, 96], [153, 153, 255])
    np.testing.assert_array_equal(rgb[27, 96], COLOR_VEHICLE)


def test_history_drawn_with_current_ego_pose(empty_static):
    # A parked car stays put in the world while the ego drives: every frame draws it in one place.
    renderer = BevRenderer(empty_static)
    for k in range(16):
        snap = make_snapshot(ego_xy=(k * 0.5, 0.0), vehicles=[[20.0, 0.0, 0.0, 4.0, 2.0]])
        renderer.push(snap)
    masks, _ = renderer.render(snap, FAR_ROUTE, 0)
    for slot in range(1, 4):
        np.testing.assert_array_equal(masks[CH_VEHICLES + slot], masks[CH_VEHICLES])
    assert masks[CH_VEHICLES, int(152 - 5 * 12.5) // 2, 48] == 255  # 20 - 7.5 m ahead


def test_short_history_repeats_oldest_frame(empty_static):
    renderer = BevRenderer(empty_static)
    for x in (10.0, 14.0, 18.0):
        snap = make_snapshot(vehicles=[[x, 0.0, 0.0, 2.0, 2.0]])
        renderer.push(snap)
    masks, _ = renderer.render(snap, FAR_ROUTE, 0)
    for slot in range(3):
        assert masks[CH_VEHICLES + slot, 51, 48] == 255  # x = 10 (oldest available)
    assert masks[CH_VEHICLES + 3, 31, 48] == 255 and masks[CH_VEHICLES + 3, 51, 48] == 0


def test_reset_clears_history(empty_static):
    renderer = BevRenderer(empty_static)
    for _ in range(16):
        renderer.push(make_snapshot(vehicles=[[10.0, 0.0, 0.0, 4.0, 2.0]]))
    renderer.reset()
    masks, _ = render_one(renderer, make_snapshot())
    assert not masks.any()


def test_render_before_push_uses_current_snapshot(empty_static):
    snap = make_snapshot(vehicles=[[10.0, 0.0, 0.0, 4.0, 2.0]])
    masks, _ = BevRenderer(empty_static).render(snap, FAR_ROUTE, 0)
    assert (masks[CH_VEHICLES : CH_VEHICLES + 4, 51, 48] == 255).all()


def test_vehicle_on_ego_right_appears_on_image_right(empty_static):
    masks, _ = render_one(BevRenderer(empty_static), make_snapshot(vehicles=[[0.0, -8.0, 0.0, 4.0, 2.0]]))
    cols = np.flatnonzero(masks[CH_VEHICLES + 3].any(axis=0))
    assert cols.min() > 48 and abs(cols.mean() - (96 + 40) / 2) <= 1.0


# --- walkers ----------------------------------------------------------------------------------


def test_walkers_drawn_double_size(empty_static):
    # A 1.0 m x 0.6 m walker becomes 2.0 m x 1.2 m: 10 x 6 px at 192 px.
    walker = [10.0, 0.0, 0.0, 1.0, 0.6]
    masks, rgb = render_one(BevRenderer(empty_static), make_snapshot(walkers=[walker]))
    cyan = (rgb == COLOR_WALKER).all(axis=-1)
    rows, cols = np.flatnonzero(cyan.any(axis=1)), np.flatnonzero(cyan.any(axis=0))
    assert 10 <= np.ptp(rows) + 1 <= 11 and abs(rows.mean() - 102) <= 0.5
    assert 6 <= np.ptp(cols) + 1 <= 7 and abs(cols.mean() - 96) <= 0.5
    assert masks[CH_WALKERS + 3, 51, 48] == 255 and not masks[CH_VEHICLES:CH_WALKERS].any()


# --- traffic lights and stop zones ------------------------------------------------------------


def test_lights_by_state_and_stop_zones(empty_static):
    # Stop lines across the ego's lane at 10, 16, 22 m ahead (green, yellow, red) and 4 m behind (NONE).
    xs = (10.0, 16.0, 22.0, -4.0)
    states = (LightState.GREEN, LightState.YELLOW, LightState.RED, LightState.NONE)
    lines = StopLines(np.array([[x, -1.5, x, 1.5] for x in xs]), np.array([int(s) for s in states]))
    zone = [5.0, 8.0, 0.0, 3.0, 3.0]  # 5 m ahead, 8 m left -> col 56, row 127
    masks, rgb = render_one(BevRenderer(empty_static), make_snapshot(stop_lines=lines, stop_zones=[zone]))
    tl = masks[CH_LIGHTS + 3]
    assert tl[51, 48] == 80 and tl[36, 48] == 170 and tl[21, 48] == 255
    assert tl[86, 48] == 0  # state NONE is not drawn
    assert tl[63, 28] == 255  # active stop zone
    assert set(np.unique(tl)) == {0, 80, 170, 255}
    # A 1.5 m thick line: about 7-8 px at 192.
    assert 7 <= np.count_nonzero(tl[:, 48] == 80) * 2 <= 10
    np.testing.assert_array_equal(rgb[102, 96], COLOR_GREEN)
    np.testing.assert_array_equal(rgb[72, 96], COLOR_YELLOW)
    np.testing.assert_array_equal(rgb[42, 96], COLOR_RED)
    np.testing.assert_array_equal(rgb[127, 56], COLOR_RED)


# --- route ------------------------------------------------------------------------------------

# A zig-zag route, 89 m long: ahead 20 m, left 15 m, back 24 m, then right 30 m at x = -4.
ZIGZAG = [(0.0, 0.0), (20.0, 0.0), (20.0, 15.0), (-4.0, 15.0), (-4.0, -15.0)]


def test_route_covers_next_80_m(empty_static):
    route = make_route(ZIGZAG)
    assert route.length == pytest.approx(89.0)
    masks, rgb = render_one(BevRenderer(empty_static), make_snapshot(), route, 0)
    ch = masks[CH_ROUTE]
    assert ch[51, 48] == 255  # (10, 0) on the first leg
    assert ch[26, 28] == 255  # (20, 8) on the second leg: col 56, row 52
    assert ch[(152 + 20) // 2, (96 + 10) // 2] == 255  # (-4, -2): 76 m along
    assert ch[(152 + 20) // 2, (96 + 50) // 2] == 0  # (-4, -10): 84 m along, beyond 80 m
    assert ch[51, 28] == 0  # (10, 8): between legs
    # The route is 16 px wide at 192 px: about 8 px pooled across the first leg.
    assert 8 <= np.count_nonzero(ch[51, 30:70]) <= 9
    np.testing.assert_array_equal(rgb[102, 96], [136, 138, 133])


def test_route_starts_at_route_index(empty_static):
    route = make_route(ZIGZAG)
    index = int(np.argmin(np.linalg.norm(route.xy - [10.0, 0.0], axis=1)))
    masks, _ = render_one(BevRenderer(empty_static), make_snapshot(), route, index)
    ch = masks[CH_ROUTE]
    assert ch[(152 - 5 * 2) // 2, 48] == 0  # (2, 0) is behind route_index
    assert ch[(152 - 5 * 14) // 2, 48] == 255  # (14, 0)
    assert ch[(152 + 20) // 2, (96 + 50) // 2] == 255  # (-4, -10) within 80 m of index now


def test_route_index_past_the_end_and_single_point_route(empty_static):
    renderer = BevRenderer(empty_static)
    single = Route(np.array([[10.0, 0.0]]), np.zeros(1), np.array([int(RouteCommand.LANE_FOLLOW)]))
    for route, index in ((make_route(ZIGZAG), 10**6), (single, 0), (make_route(ZIGZAG), -5)):
        masks, _ = render_one(renderer, make_snapshot(), route, index)
        assert masks.shape == (15, MASK_SIZE, MASK_SIZE)
    assert masks[CH_ROUTE, 51, 48] == 255  # a negative index starts at the route's beginning


def test_route_lookahead_is_configurable(empty_static):
    masks, _ = render_one(BevRenderer(empty_static, route_lookahead_m=12.0), make_snapshot(), make_route(ZIGZAG), 0)
    rows = np.flatnonzero(masks[CH_ROUTE, :, 48])
    # Ends 12 m ahead (row 92 at 192 px) plus the 8 px round cap.
    assert rows.min() * 2 >= 92 - 8 - 2 and masks[CH_ROUTE, 51, 48] == 255


# --- static layers: road and lanes ------------------------------------------------------------


def straight_town() -> StaticLayers:
    road = np.array([[-100.0, -4.0], [100.0, -4.0], [100.0, 4.0], [-100.0, 4.0]])
    lanes = [(np.array([[-100.0, 2.0], [100.0, 2.0]]), "solid"), (np.array([[-100.0, -2.0], [100.0, -2.0]]), "broken")]
    return render_static_layers([road], lanes)


def test_static_raster_layout():
    town = straight_town()
    assert town.origin_xy == (-140.0, 44.0)
    assert town.road.shape == (int(88 * 5), int(280 * 5)) and town.road.dtype == np.uint8
    np.testing.assert_allclose(town.world_to_raster(np.array([-140.0, 44.0])), [-0.5, -0.5])
    col, row = np.rint(town.world_to_raster(np.array([0.0, 0.0]))).astype(int)
    assert town.road[row, col] == 255 and town.road[row - 5 * 10, col] == 0  # 10 m north: off-road
    assert set(np.unique(town.lanes)) == {0, 120, 255}


def test_is_drivable():
    town = straight_town()
    assert town.is_drivable(0.0, 0.0) and town.is_drivable(50.0, 3.5)
    assert not town.is_drivable(0.0, 6.0) and not town.is_drivable(5000.0, 0.0)


def test_road_channel_ego_along_road():
    masks, rgb = render_one(BevRenderer(straight_town()), make_snapshot(ego_xy=(3.0, 0.0)))
    road = masks[CH_ROAD]
    assert road[51, 48] == 255  # 10 m ahead, on the road
    assert road[51, (96 - 75) // 2] == 0 and road[51, (96 + 75) // 2] == 0  # 15 m either side
    # Road edges at y = +-4 m -> cols 76 and 116 at 192 px.
    np.testing.assert_array_equal(rgb[100, 78], COLOR_ROAD)
    np.testing.assert_array_equal(rgb[100, 114], COLOR_ROAD)
    assert not rgb[100, 73].any() and not rgb[100, 119].any()


def test_road_channel_ego_facing_north():
    masks, _ = render_one(BevRenderer(straight_town()), make_snapshot(ego_xy=(3.0, 0.0), ego_yaw=np.pi / 2))
    road = masks[CH_ROAD]
    assert road[51, 48] == 0  # 10 m north: off-road
    assert road[76, (96 + 75) // 2] == 255 and road[76, (96 - 75) // 2] == 255  # 15 m east / west
    rows = np.flatnonzero(road[:, 48])
    assert abs(rows.min() * 2 - (152 - 20)) <= 2 and abs(rows.max() * 2 - (152 + 20)) <= 2


def test_road_from_polylines_and_outside_raster_is_zero():
    town = render_static_layers([], [], road_polylines=[(np.array([[0.0, -50.0], [0.0, 50.0]]), 8.0)])
    # Ego on the road facing north; the 8 m wide road runs up the image.
    masks, _ = render_one(BevRenderer(town), make_snapshot(ego_yaw=np.pi / 2))
    road = masks[CH_ROAD]
    assert road[51, 48] == 255 and road[51, 48 + 15] == 0 and road[51, 48 - 15] == 0
    # Far from the town everything is off the raster: zeros.
    masks, _ = render_one(BevRenderer(town), make_snapshot(ego_xy=(5000.0, 0.0)))
    assert not masks[CH_ROAD].any() and not masks[CH_LANES].any()


def test_lane_markings_solid_and_broken():
    masks, _ = render_one(BevRenderer(straight_town()), make_snapshot())
    lanes = masks[CH_LANES]
    solid = lanes[:, (96 - 10) // 2]  # y = +2 m (left): col 86
    broken = lanes[:, (96 + 10) // 2]  # y = -2 m (right): col 106
    assert (solid == 255).all()
    assert set(np.unique(broken)) == {0, 120}
    # 3 m dash + 3 m gap: roughly half the length painted (dash caps and max-pooling add a
    # little), in several separate dashes.
    assert 0.4 < np.mean(broken == 120) < 0.75
    assert np.count_nonzero(np.diff((broken == 120).astype(int)) == 1) >= 5
    assert not lanes[:, :30].any()


def test_unknown_lane_kind_rejected():
    with pytest.raises(ValueError):
        render_static_layers([], [(np.array([[0.0, 0.0], [1.0, 0.0]]), "dotted")])


def test_history_must_have_four_offsets(empty_static):
    with pytest.raises(ValueError):
        BevRenderer(empty_static, history=(10, 5, 0))


# --- masks_to_rgb -----------------------------------------------------------------------------


def test_masks_to_rgb_painting_order():
    masks = np.zeros((15, 8, 8), np.uint8)
    masks[CH_ROAD] = 255
    masks[CH_ROUTE, 0] = 255
    masks[CH_LANES, 1] = 120
    masks[CH_LIGHTS + 3, 2] = 170
    masks[CH_VEHICLES + 0, 3] = 255  # oldest vehicle frame
    masks[CH_WALKERS + 3, 3, :4] = 255  # current walker on top of the old vehicle
    ego = np.zeros((8, 8), bool)
    ego[7, 7] = True
    rgb = masks_to_rgb(masks, ego)
    np.testing.assert_array_equal(rgb[0, 0], [136, 138, 133])
    np.testing.assert_array_equal(rgb[1, 0], [255, 0, 255])
    np.testing.assert_array_equal(rgb[2, 0], COLOR_YELLOW)
    np.testing.assert_array_equal(rgb[3, 0], COLOR_WALKER)
    np.testing.assert_array_equal(rgb[3, 5], [153, 153, 255])
    np.testing.assert_array_equal(rgb[5, 5], COLOR_ROAD)
    np.testing.assert_array_equal(rgb[7, 7], [255, 255, 255])
