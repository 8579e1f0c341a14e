"""Bird's-eye-view observation: Roach-style 15-channel masks and an RGB image around the ego.

Contract: masks uint8 [15, 96, 96] and rgb uint8 [192, 192, 3].
Everything is rendered at 192x192 px, 5 px per metre, with the ego at pixel (col 96, row 152),
heading up and its right side on the image's right; the masks are then max-pooled 2x2 to 96 px
(max, not mean, so thin lines and small walkers survive).

Channels:
    0 road (255), 1 route (next ~80 m, 16 px thick), 2 lane markings (solid 255, broken 120),
    3-6 vehicles, 7-10 walkers (boxes doubled), 11-14 traffic lights (stop lines 80 green /
    170 yellow / 255 red, active stop-sign zones 255), each at frames t-15, t-10, t-5, t.

Pixel convention: integer (col, row) coordinates are pixel centres, which is what cv2 drawing
and warpAffine's nearest-neighbour sampling assume; drawing uses 2 fractional bits (shift=2).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from envs.geometry import box_corners
from envs.types import BOX_LENGTH, BOX_WIDTH, LightState, Route, Snapshot

logger = logging.getLogger(__name__)

BEV_SIZE = 192  # px, rendering resolution (and the RGB image)
MASK_SIZE = 96  # px, after 2x2 max-pooling
PIXELS_PER_METRE = 5.0
EGO_COL = BEV_SIZE // 2  # 96
EGO_ROW = BEV_SIZE - 40  # 152: 40 px behind the ego, 152 px (30.4 m) ahead
NUM_CHANNELS = 15

CH_ROAD, CH_ROUTE, CH_LANES = 0, 1, 2
CH_VEHICLES, CH_WALKERS, CH_LIGHTS = 3, 7, 11  # first of four history channels each
NUM_HISTORY = 4

LANE_SOLID, LANE_BROKEN = 255, 120
LIGHT_GREEN, LIGHT_YELLOW, LIGHT_RED = 80, 170, 255
STOP_ZONE_VALUE = 255
# Mask value indexed by LightState value; 0 means "not drawn".
_LIGHT_VALUE_BY_STATE = tuple(
    {LightState.NONE: 0, LightState.RED: LIGHT_RED, LightState.YELLOW: LIGHT_YELLOW, LightState.GREEN: LIGHT_GREEN}[
        LightState(v)
    ]
    for v in range(len(LightState))
)

ROUTE_THICKNESS_PX = 16
STOP_LINE_THICKNESS_M = 1.5
LANE_THICKNESS_M = 0.4
DASH_M, GAP_M = 3.0, 3.0
WALKER_SCALE = 2.0  # walkers are tiny: draw them with length and width doubled

_SHIFT = 2  # fractional bits for cv2 drawing (sub-pixel precision)
_FIXED = 1 << _SHIFT

# Roach colours (RGB).
COLOR_ROAD = (46, 52, 54)
COLOR_ROUTE = (136, 138, 133)
COLOR_LANE = (255, 0, 255)
COLOR_GREEN = (0, 255, 0)
COLOR_YELLOW = (255, 255, 0)
COLOR_RED = (255, 0, 0)
COLOR_VEHICLE = (0, 0, 255)
COLOR_WALKER = (0, 255, 255)
COLOR_EGO = (255, 255, 255)


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def world_to_pixel_matrix(ego_x: float, ego_y: float, ego_yaw: float) -> np.ndarray:
    """Affine 2x3 matrix mapping world (x, y) to BEV pixel (col, row) at 192 px."""
    c, s = math.cos(ego_yaw), math.sin(ego_yaw)
    k = PIXELS_PER_METRE
    # forward = c*dx + s*dy; left = -s*dx + c*dy; col = EGO_COL - k*left; row = EGO_ROW - k*forward
    return np.array(
        [
            [k * s, -k * c, EGO_COL - k * s * ego_x + k * c * ego_y],
            [-k * c, -k * s, EGO_ROW + k * c * ego_x + k * s * ego_y],
        ]
    )


def world_to_pixel(points_xy: np.ndarray, ego_x: float, ego_y: float, ego_yaw: float) -> np.ndarray:
    """World points [..., 2] -> float (col, row) [..., 2] in the 192 px BEV image."""
    m = world_to_pixel_matrix(ego_x, ego_y, ego_yaw)
    pts = np.asarray(points_xy, dtype=np.float64)
    x, y = pts[..., 0], pts[..., 1]
    # Explicit arithmetic, not `@`: tiny matmuls can hit BLAS threading overhead.
    return np.stack([m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]], axis=-1)


def _to_fixed(pixels: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> int32 fixed point for cv2 calls with shift=_SHIFT."""
    return np.rint(pixels * _FIXED).astype(np.int32)


def _transform_fixed(points: np.ndarray, world_to_px: np.ndarray) -> np.ndarray:
    """World points [..., 2] -> int32 fixed-point pixel coordinates (for cv2 shift=_SHIFT).

    cv2.transform is one C++ pass; numpy `@` on [N, 2] is several times slower here.
    """
    pts = np.ascontiguousarray(points, dtype=np.float64)
    if pts.size == 0:
        return np.zeros(pts.shape, dtype=np.int32)
    out = cv2.transform(pts.reshape(-1, 1, 2), world_to_px * _FIXED)
    return np.rint(out).astype(np.int32).reshape(pts.shape)


def _visible(polys_fixed: np.ndarray, margin_px: float = 0.0) -> np.ndarray:
    """Bool [N]: which polygons [N, P, 2] (fixed point) overlap the BEV image (plus a margin)."""
    x, y = polys_fixed[..., 0], polys_fixed[..., 1]
    # Element-wise min/max over the P vertices: numpy reductions along a tiny axis are slow.
    x_lo = x_hi = x[:, 0]
    y_lo = y_hi = y[:, 0]
    for k in range(1, polys_fixed.shape[1]):
        x_lo, x_hi = np.minimum(x_lo, x[:, k]), np.maximum(x_hi, x[:, k])
        y_lo, y_hi = np.minimum(y_lo, y[:, k]), np.maximum(y_hi, y[:, k])
    m = margin_px * _FIXED
    limit = BEV_SIZE * _FIXED + m
    return (x_hi >= -m) & (x_lo < limit) & (y_hi >= -m) & (y_lo < limit)


# ---------------------------------------------------------------------------------------------
# Static layers (road, lane markings), pre-rendered once per town
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaticLayers:
    """A world-aligned raster of the town: row 0 is north (y_max), column 0 is west (x_min).

    origin_xy is the world (x_min, y_max) of the top-left corner of pixel (0, 0).
    """

    road: np.ndarray  # [H, W] uint8, drivable = 255
    lanes: np.ndarray  # [H, W] uint8, solid 255, broken 120
    origin_xy: tuple[float, float]
    pixels_per_metre: float = PIXELS_PER_METRE

    def world_to_raster_matrix(self) -> np.ndarray:
        """Affine 2x3 matrix mapping world (x, y) to raster (col, row), integer = pixel centre."""
        k = self.pixels_per_metre
        x0, y0 = self.origin_xy
        return np.array([[k, 0.0, -k * x0 - 0.5], [0.0, -k, k * y0 - 0.5]])

    def world_to_raster(self, points_xy: np.ndarray) -> np.ndarray:
        """World points [..., 2] -> float raster (col, row) [..., 2]."""
        k = self.pixels_per_metre
        x0, y0 = self.origin_xy
        pts = np.asarray(points_xy, dtype=np.float64)
        return np.stack([k * (pts[..., 0] - x0) - 0.5, k * (y0 - pts[..., 1]) - 0.5], axis=-1)

    def is_drivable(self, x: float, y: float) -> bool:
        """Whether a world point lies on the road raster (outside the raster: no)."""
        col, row = np.rint(self.world_to_raster(np.array([x, y]))).astype(int)
        h, w = self.road.shape
        return bool(0 <= row < h and 0 <= col < w and self.road[row, col] > 0)


def _world_bounds(point_sets: list[np.ndarray], margin_m: float) -> tuple[float, float, float, float]:
    nonempty = [p for p in point_sets if len(p)]
    if not nonempty:
        # An empty town still yields a valid (all-zero) raster.
        return -margin_m, -margin_m, margin_m, margin_m
    allp = np.concatenate(nonempty)
    lo, hi = allp.min(axis=0) - margin_m, allp.max(axis=0) + margin_m
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _dash_pieces(xy: np.ndarray, dash_m: float = DASH_M, gap_m: float = GAP_M) -> list[np.ndarray]:
    """Split a polyline into dashes of dash_m separated by gaps of gap_m, measured along it."""
    keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 1e-9])
    xy = xy[keep]
    if len(xy) < 2:
        return []
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    pieces = []
    for start in np.arange(0.0, s[-1], dash_m + gap_m):
        end = min(start + dash_m, s[-1])
        inner = (s > start) & (s < end)
        ss = np.concatenate([[start], s[inner], [end]])
        pieces.append(np.stack([np.interp(ss, s, xy[:, 0]), np.interp(ss, s, xy[:, 1])], axis=-1))
    return pieces


def render_static_layers(
    road_polygons: Sequence[np.ndarray],
    lane_polylines: Sequence[tuple[np.ndarray, str]],
    pixels_per_metre: float = PIXELS_PER_METRE,
    margin_m: float = 40.0,
    road_polylines: Sequence[tuple[np.ndarray, float]] = (),
) -> StaticLayers:
    """Rasterise a town once: road = filled polygons plus thick centreline polylines
    (xy, width_m); lane markings = (xy, "solid" | "broken") lines about 0.4 m thick."""
    polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in road_polygons]
    road_lines = [(np.asarray(xy, dtype=np.float64).reshape(-1, 2), float(w)) for xy, w in road_polylines]
    lanes = [(np.asarray(xy, dtype=np.float64).reshape(-1, 2), str(kind)) for xy, kind in lane_polylines]
    widest = max((w for _, w in road_lines), default=0.0)
    x_min, y_min, x_max, y_max = _world_bounds(
        polys + [xy for xy, _ in road_lines] + [xy for xy, _ in lanes], margin_m + 0.5 * widest
    )
    width = int(np.ceil((x_max - x_min) * pixels_per_metre))
    height = int(np.ceil((y_max - y_min) * pixels_per_metre))
    layers = StaticLayers(
        road=np.zeros((height, width), dtype=np.uint8),
        lanes=np.zeros((height, width), dtype=np.uint8),
        origin_xy=(x_min, y_max),
        pixels_per_metre=float(pixels_per_metre),
    )
    _draw_road(layers, polys, road_lines)
    _draw_lanes(layers, lanes)
    logger.info("static BEV raster %dx%d px at %.1f px/m", width, height, pixels_per_metre)
    return layers


def _draw_road(layers: StaticLayers, polys: list[np.ndarray], lines: list[tuple[np.ndarray, float]]) -> None:
    # One fillPoly per polygon: fillPoly on several polygons at once uses even-odd filling,
    # which would punch holes where road polygons overlap.
    for poly in polys:
        if len(poly) >= 3:
            cv2.fillPoly(layers.road, [_to_fixed(layers.world_to_raster(poly))], 255, cv2.LINE_8, _SHIFT)
    for xy, width_m in lines:
        thickness = max(1, int(round(width_m * layers.pixels_per_metre)))
        cv2.polylines(layers.road, [_to_fixed(layers.world_to_raster(xy))], False, 255, thickness, cv2.LINE_8, _SHIFT)


def _draw_lanes(layers: StaticLayers, lanes: list[tuple[np.ndarray, str]]) -> None:
    thickness = max(1, int(round(LANE_THICKNESS_M * layers.pixels_per_metre)))
    for xy, kind in lanes:
        if kind == "broken":
            pieces, value = _dash_pieces(xy), LANE_BROKEN
        elif kind == "solid":
            pieces, value = [xy], LANE_SOLID
        else:
            raise ValueError(f"unknown lane marking kind {kind!r} (expected 'solid' or 'broken')")
        fixed = [_to_fixed(layers.world_to_raster(p)) for p in pieces if len(p) >= 2]
        if fixed:
            cv2.polylines(layers.lanes, fixed, False, value, thickness, cv2.LINE_8, _SHIFT)


# ---------------------------------------------------------------------------------------------
# Dynamic objects per frame
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """One step's dynamic objects in world coordinates, ready to transform in bulk."""

    box_corners: np.ndarray  # [B, 4, 2]: vehicles, walkers (doubled), stop zones
    box_channels: np.ndarray  # [B] int: first history channel of each box's group
    line_ends: np.ndarray  # [L, 2, 2] stop lines that are drawn (state not NONE)
    line_values: np.ndarray  # [L] uint8: 80 / 170 / 255, ascending so red wins overlaps


def _frame_from_snapshot(snapshot: Snapshot) -> _Frame:
    vehicles = np.asarray(snapshot.vehicles, dtype=np.float64).reshape(-1, 5)
    walkers = np.array(snapshot.walkers, dtype=np.float64).reshape(-1, 5)
    walkers[:, [BOX_LENGTH, BOX_WIDTH]] *= WALKER_SCALE
    zones = np.asarray(snapshot.stop_zones, dtype=np.float64).reshape(-1, 5)
    channels = np.repeat(
        np.array([CH_VEHICLES, CH_WALKERS, CH_LIGHTS], dtype=np.intp), [len(vehicles), len(walkers), len(zones)]
    )
    segments = np.asarray(snapshot.stop_lines.segments, dtype=np.float64).reshape(-1, 4)
    states = np.asarray(snapshot.stop_lines.states, dtype=np.int64).reshape(-1)
    values = np.asarray(_LIGHT_VALUE_BY_STATE, dtype=np.uint8)[np.clip(states, 0, len(_LIGHT_VALUE_BY_STATE) - 1)]
    order = np.argsort(values, kind="stable")
    order = order[values[order] > 0]
    return _Frame(
        box_corners=box_corners(np.concatenate([vehicles, walkers, zones])),
        box_channels=channels,
        line_ends=segments[order].reshape(-1, 2, 2),
        line_values=values[order],
    )


def _draw_stop_lines(channels: list[np.ndarray], frames: Sequence[_Frame], world_to_px: np.ndarray) -> None:
    slots = [slot for slot, f in enumerate(frames) if len(f.line_ends)]
    if not slots:
        return
    thickness = max(1, int(round(STOP_LINE_THICKNESS_M * PIXELS_PER_METRE)))
    ends = _transform_fixed(np.concatenate([frames[i].line_ends for i in slots]), world_to_px)
    line_channels = np.concatenate([np.full(len(frames[i].line_ends), CH_LIGHTS + i) for i in slots])
    values = np.concatenate([frames[i].line_values for i in slots])
    visible = _visible(ends, margin_px=thickness)
    for ch, (p0, p1), value in zip(line_channels[visible].tolist(), ends[visible].tolist(), values[visible].tolist()):
        cv2.line(channels[ch], p0, p1, value, thickness, cv2.LINE_8, _SHIFT)


def _draw_history(masks: np.ndarray, frames: Sequence[_Frame], world_to_px: np.ndarray) -> None:
    """Draw the dynamic objects of the history frames (oldest first) with the current ego pose.

    All frames' corners go through one transform and one visibility test; only the cv2 draw
    calls loop in Python.
    """
    channels = list(masks)  # per-channel 2-D views, indexed without re-slicing per box
    # Stop lines before boxes so stop zones (255) stay on top.
    _draw_stop_lines(channels, frames, world_to_px)
    corners = _transform_fixed(np.concatenate([f.box_corners for f in frames]), world_to_px)
    box_channels = np.concatenate([f.box_channels + slot for slot, f in enumerate(frames)])
    visible = _visible(corners)
    # fillConvexPoly one by one: fillPoly over many polygons would cancel overlaps (even-odd).
    for ch, poly in zip(box_channels[visible].tolist(), corners[visible]):
        cv2.fillConvexPoly(channels[ch], poly, 255, cv2.LINE_8, _SHIFT)


# ---------------------------------------------------------------------------------------------
# Pooling and colouring
# ---------------------------------------------------------------------------------------------


def max_pool2x2(masks: np.ndarray) -> np.ndarray:
    """2x2 max-pool of [C, H, W] uint8 masks (H, W even) -> [C, H/2, W/2]."""
    c, h, w = masks.shape
    # ndarray.max(axis=(2, 4)) on a [C, H/2, 2, W/2, 2] view is ~100x slower than this for
    # uint8. Row pairs are the two halves of each row of a [C*H/2, 2*W] view; cv2.max on the
    # halves pools rows. Transposing turns column pairs into row pairs for a second pass.
    rows = np.ascontiguousarray(masks).reshape(c * h // 2, 2 * w)
    pooled_rows = cv2.max(rows[:, :w], rows[:, w:])  # [C*H/2, W]
    cols = cv2.transpose(pooled_rows).reshape(w // 2, c * h)  # [W/2, 2 * C*H/2]
    pooled = cv2.max(cols[:, : c * h // 2], cols[:, c * h // 2 :])  # [W/2, C*H/2]
    return cv2.transpose(pooled).reshape(c, h // 2, w // 2)


def _tint(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """Lighten a colour towards white (older history frames look paler)."""
    return tuple(int(ch + (255 - ch) * factor) for ch in color)  # type: ignore[return-value]


def _build_layer_tables() -> tuple[tuple[int, ...], np.ndarray, np.ndarray, int]:
    """Layer ids for the masks, and the palette (one LUT per RGB channel) indexed by layer id.

    Layer ids increase in painting order, so a per-pixel max over channels picks the colour
    the last painter would have left: road, route, lanes, lights, vehicles, walkers, ego.
    Returns (plain_ids (11 ints) for channels 0-10, light_luts [4, 256] for channels 11-14,
    palette [3, 256], ego_id).
    """
    h_len = NUM_HISTORY - 1
    palette = [(0, 0, 0), COLOR_ROAD, COLOR_ROUTE, COLOR_LANE]
    plain_ids = np.zeros(CH_LIGHTS, dtype=np.uint8)
    plain_ids[[CH_ROAD, CH_ROUTE, CH_LANES]] = 1, 2, 3
    light_luts = np.zeros((NUM_HISTORY, 256), dtype=np.uint8)
    # Light values bucketed around 80 / 170 / 255 so slightly different values still colour.
    buckets = ((1, 125, COLOR_GREEN), (125, 213, COLOR_YELLOW), (213, 256, COLOR_RED))
    for i in range(NUM_HISTORY):
        for lo, hi, color in buckets:
            light_luts[i, lo:hi] = len(palette)
            palette.append(_tint(color, (h_len - i) * 0.2))
    for ch, color in ((CH_VEHICLES, COLOR_VEHICLE), (CH_WALKERS, COLOR_WALKER)):
        for i in range(NUM_HISTORY):
            plain_ids[ch + i] = len(palette)
            palette.append(_tint(color, (h_len - i) * 0.2))
    ego_id = len(palette)
    palette.append(COLOR_EGO)
    table = np.zeros((3, 256), dtype=np.uint8)
    table[:, : len(palette)] = np.array(palette, dtype=np.uint8).T
    for arr in (light_luts, table):
        arr.setflags(write=False)  # shared read-only tables, not mutable module state
    return tuple(int(i) for i in plain_ids), light_luts, table, ego_id


_PLAIN_IDS, _LIGHT_LUTS, _PALETTE, _EGO_ID = _build_layer_tables()


def masks_to_rgb(masks192: np.ndarray, ego_mask: np.ndarray) -> np.ndarray:
    """Roach-style RGB [H, W, 3] from [15, H, W] masks and an ego mask [H, W] (bool or uint8).

    Any non-zero mask value counts as present; light channels colour by value (80 green,
    170 yellow, 255 red); older history frames are tinted paler.
    """
    # Per-channel cv2 ops on small 2-D images, in place: several times faster than one numpy
    # expression over the whole [15, H, W] stack (big temporaries, cache misses).
    # Channels 0-10 are present/absent: threshold to the layer id.
    layer = cv2.threshold(masks192[CH_ROAD], 0, _PLAIN_IDS[CH_ROAD], cv2.THRESH_BINARY)[1]
    scratch = np.empty_like(layer)
    for ch in range(CH_ROAD + 1, CH_LIGHTS):
        if cv2.countNonZero(masks192[ch]):  # many channels are empty: skip them
            cv2.threshold(masks192[ch], 0, _PLAIN_IDS[ch], cv2.THRESH_BINARY, dst=scratch)
            cv2.max(layer, scratch, dst=layer)
    for i in range(NUM_HISTORY):
        light = masks192[CH_LIGHTS + i]
        if cv2.countNonZero(light):
            cv2.max(layer, cv2.LUT(light, _LIGHT_LUTS[i]), dst=layer)
    # The ego has the highest layer id, so a max paints it on top.
    ego = np.ascontiguousarray(ego_mask)
    ego = ego.view(np.uint8) if ego.dtype == bool else (ego != 0).view(np.uint8)
    layer = cv2.max(layer, cv2.threshold(ego, 0, _EGO_ID, cv2.THRESH_BINARY)[1])
    return cv2.merge([cv2.LUT(layer, _PALETTE[c]) for c in range(3)])


# ---------------------------------------------------------------------------------------------
# Renderer
# ---------------------------------------------------------------------------------------------


class BevRenderer:
    """Renders the BEV observation; keeps a ring buffer of recent dynamic objects.

    Call push(snapshot) once per step, then render(snapshot, route, route_index).
    """

    def __init__(
        self,
        static: StaticLayers,
        history: Sequence[int] = (15, 10, 5, 0),
        route_lookahead_m: float = 80.0,
    ) -> None:
        history = tuple(int(h) for h in history)
        if len(history) != NUM_HISTORY or min(history) < 0:
            raise ValueError(f"history must be {NUM_HISTORY} non-negative frame offsets, got {history}")
        self.static = static
        self.history = history
        self.route_lookahead_m = float(route_lookahead_m)
        # Road and lanes as one 2-channel image so a single warpAffine serves both; viewed as
        # one uint16 channel because cv2's 1-channel 16-bit warp is several times faster than
        # its 2-channel 8-bit one (nearest sampling moves both bytes together either way).
        static2 = np.ascontiguousarray(np.stack([static.road, static.lanes], axis=-1))
        self._static16 = static2.view(np.uint16)[..., 0]
        self._world_to_raster = static.world_to_raster_matrix()
        self._frames: deque[_Frame] = deque(maxlen=max(history) + 1)
        self._ego_cache: tuple[tuple[float, float] | None, np.ndarray] = (None, np.zeros((0, 0), np.uint8))

    def reset(self) -> None:
        self._frames.clear()

    def push(self, snapshot: Snapshot) -> None:
        """Record this step's vehicles, walkers, stop lines and stop zones (world frame)."""
        self._frames.append(_frame_from_snapshot(snapshot))

    def _frame_at(self, offset: int) -> _Frame:
        # Before enough frames exist, the oldest available frame stands in for older ones.
        return self._frames[max(len(self._frames) - 1 - offset, 0)]

    def render(
        self, snapshot: Snapshot, route: Route, route_index: int, with_rgb: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Masks uint8 [15, 96, 96] and RGB uint8 [192, 192, 3] (None when not `with_rgb`) around
        snapshot.ego.

        History channels use the frames recorded by push(); call push(snapshot) first.
        """
        ego = snapshot.ego
        w2p = world_to_pixel_matrix(ego.x, ego.y, ego.yaw)
        masks = np.zeros((NUM_CHANNELS, BEV_SIZE, BEV_SIZE), dtype=np.uint8)
        self._render_static(masks, ego.x, ego.y, ego.yaw)
        self._render_route(masks[CH_ROUTE], route, route_index, w2p)
        if not self._frames:
            logger.debug("render before any push: using the current snapshot as the whole history")
            frames = [_frame_from_snapshot(snapshot)] * NUM_HISTORY
        else:
            frames = [self._frame_at(k) for k in self.history]
        _draw_history(masks, frames, w2p)
        rgb = masks_to_rgb(masks, self._ego_mask(ego.length, ego.width)) if with_rgb else None
        return max_pool2x2(masks), rgb

    def _render_static(self, masks: np.ndarray, ego_x: float, ego_y: float, ego_yaw: float) -> None:
        """Road and lane channels: warp the town raster around the ego (nearest neighbour)."""
        # BEV pixel (col, row) -> world: forward = (EGO_ROW - row)/k, left = (EGO_COL - col)/k;
        # then world -> raster, which is axis-aligned: col = kr*x + bx, row = -kr*y + by.
        c, s, k = math.cos(ego_yaw), math.sin(ego_yaw), PIXELS_PER_METRE
        (kr, _, bx), (_, _, by) = self._world_to_raster.tolist()
        px_to_raster = np.array(
            [
                [kr * s / k, -kr * c / k, kr * (ego_x + (c * EGO_ROW - s * EGO_COL) / k) + bx],
                [kr * c / k, kr * s / k, -kr * (ego_y + (s * EGO_ROW + c * EGO_COL) / k) + by],
            ]
        )
        warped16 = cv2.warpAffine(
            self._static16,
            px_to_raster,
            (BEV_SIZE, BEV_SIZE),
            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        warped = warped16.view(np.uint8).reshape(BEV_SIZE, BEV_SIZE, 2)
        masks[CH_ROAD] = warped[..., 0]
        masks[CH_LANES] = warped[..., 1]

    def _render_route(self, img: np.ndarray, route: Route, route_index: int, w2p: np.ndarray) -> None:
        """The next route_lookahead_m of the route as a thick polyline."""
        n = len(route.xy)
        if n == 0:
            return
        start = min(max(int(route_index), 0), n - 1)
        s_end = route.s[start] + self.route_lookahead_m
        stop = int(np.searchsorted(route.s, s_end, side="right"))
        xy = np.asarray(route.xy[start:stop], dtype=np.float64)
        if stop < n and route.s[stop] > route.s[stop - 1]:
            # End exactly at the look-ahead distance rather than at the last whole point.
            t = (s_end - route.s[stop - 1]) / (route.s[stop] - route.s[stop - 1])
            xy = np.vstack([xy, route.xy[stop - 1] + t * (route.xy[stop] - route.xy[stop - 1])])
        fixed = _transform_fixed(xy, w2p).reshape(-1, 1, 2)
        # The route is dense (~1 m); dropping near-collinear points (0.5 px tolerance) makes
        # the thick polyline several times cheaper to draw.
        fixed = cv2.approxPolyDP(fixed, 0.5 * _FIXED, False)
        cv2.polylines(img, [fixed], False, 255, ROUTE_THICKNESS_PX, cv2.LINE_8, _SHIFT)

    def _ego_mask(self, length: float, width: float) -> np.ndarray:
        """The ego box at the fixed ego pixel; cached since the ego's size rarely changes."""
        key = (float(length), float(width))
        if self._ego_cache[0] != key:
            mask = np.zeros((BEV_SIZE, BEV_SIZE), dtype=np.uint8)
            corners = world_to_pixel(box_corners(np.array([[0.0, 0.0, 0.0, length, width]])), 0.0, 0.0, 0.0)
            cv2.fillConvexPoly(mask, _to_fixed(corners[0]), 1, cv2.LINE_8, _SHIFT)
            mask.setflags(write=False)
            self._ego_cache = (key, mask)
        return self._ego_cache[1]
