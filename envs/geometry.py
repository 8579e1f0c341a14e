"""Small geometry shared by the BEV, collisions, reward, routing and traffic (world frame of
envs.types: right-handed, yaw counter-clockwise)."""

from __future__ import annotations

import math

import numpy as np

from envs.types import BOX_LENGTH, BOX_WIDTH, BOX_X, BOX_Y, BOX_YAW, Route

ROUTE_SPACING_M = 1.0  # planned routes are resampled to about this spacing


def wrap_angle(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """Corners [N, 4, 2] of boxes [N, 5] (x, y, yaw, length, width).

    Order: front-left, front-right, rear-right, rear-left (a convex, consistently wound polygon).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    c, s = np.cos(boxes[:, BOX_YAW]), np.sin(boxes[:, BOX_YAW])
    hl, hw = 0.5 * boxes[:, BOX_LENGTH], 0.5 * boxes[:, BOX_WIDTH]
    fwd = np.array([1.0, 1.0, -1.0, -1.0])[None, :] * hl[:, None]
    left = np.array([1.0, -1.0, -1.0, 1.0])[None, :] * hw[:, None]
    x = boxes[:, BOX_X, None] + fwd * c[:, None] - left * s[:, None]
    y = boxes[:, BOX_Y, None] + fwd * s[:, None] + left * c[:, None]
    return np.stack([x, y], axis=-1)


def to_ego_frame(points: np.ndarray, x: float, y: float, yaw: float) -> np.ndarray:
    """World points [N, 2] -> ego frame (x forward, y left)."""
    c, s = math.cos(yaw), math.sin(yaw)
    d = np.atleast_2d(points) - (x, y)
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)


def polyline_length(shape: np.ndarray) -> np.ndarray:
    """Cumulative arc length of a polyline [K, 2]."""
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(shape, axis=0), axis=1))])


def point_along(shape: np.ndarray, distance: float) -> np.ndarray:
    """The point at arc length `distance` along a polyline (clamped to its ends)."""
    s = polyline_length(shape)
    return np.array([np.interp(distance, s, shape[:, 0]), np.interp(distance, s, shape[:, 1])])


def slice_polyline(shape: np.ndarray, start: float, end: float) -> np.ndarray:
    """The part of a polyline between two arc lengths, as points (interpolated at the ends)."""
    s = polyline_length(shape)
    start, end = max(0.0, start), min(s[-1], end)
    inner = (s > start) & (s < end)
    ends = [np.interp(v, s, shape[:, k]) for v in (start, end) for k in (0, 1)]
    return np.vstack([ends[0:2], shape[inner], ends[2:4]])


def route_from_pieces(pieces) -> Route:
    """Join (polyline, command) pieces and resample at about 1 m spacing."""
    xy_parts, cmd_parts = [], []
    for shape, command in pieces:
        if len(shape) < 2:
            continue
        s = polyline_length(shape)
        n = max(2, int(math.ceil(s[-1] / ROUTE_SPACING_M)) + 1)
        grid = np.linspace(0.0, s[-1], n)
        pts = np.stack([np.interp(grid, s, shape[:, 0]), np.interp(grid, s, shape[:, 1])], axis=1)
        if xy_parts:
            pts = pts[1:]  # the joint point is already there
        xy_parts.append(pts)
        cmd_parts.append(np.full(len(pts), int(command)))
    xy = np.vstack(xy_parts)
    keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 1e-6])
    xy, commands = xy[keep], np.concatenate(cmd_parts)[keep]
    d = np.diff(xy, axis=0)
    yaw = np.arctan2(d[:, 1], d[:, 0])
    return Route(xy=xy, yaw=np.append(yaw, yaw[-1]), commands=commands)
