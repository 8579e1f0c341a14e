"""Lines of sight on the ground plane: which objects an observer at `eye` can see past occluding boxes.

An object is visible when a straight line from the eye reaches its centre or any of its corners
without crossing an occluder's box (a part of it that sticks out from behind a parked vehicle is
seen). Boxes are [N, 5] (x, y, yaw, length, width), envs.types' convention.
"""

from __future__ import annotations

import numpy as np

from envs.geometry import box_corners


def visible(eye: tuple[float, float], objects: np.ndarray, occluders: np.ndarray) -> np.ndarray:
    """[N] bool: whether each object's box can be seen from `eye` past the `occluders` [K, 5]."""
    objects = np.asarray(objects, dtype=np.float64).reshape(-1, 5)
    occluders = np.asarray(occluders, dtype=np.float64).reshape(-1, 5)
    if len(objects) == 0 or len(occluders) == 0:
        return np.ones(len(objects), dtype=bool)
    points = np.concatenate([objects[:, None, :2], box_corners(objects)], axis=1)  # [N, 5, 2]
    blocked = np.zeros(points.shape[:2], dtype=bool)
    for box in occluders:
        blocked |= _crosses_box(np.asarray(eye, dtype=np.float64), points, box)
    return ~blocked.all(axis=1)


def _crosses_box(eye: np.ndarray, points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Whether each segment eye -> point crosses the box (Liang-Barsky clipping in the box's frame)."""
    c, s = np.cos(box[2]), np.sin(box[2])
    to_box = np.array([[c, s], [-s, c]])  # world -> box frame (rows: the box's forward and left axes)
    a = (eye - box[:2]) @ to_box.T  # [2]
    b = (points - box[:2]) @ to_box.T  # [..., 2]
    half = np.array([box[3], box[4]]) / 2
    d = b - a
    t0, t1 = np.zeros(points.shape[:-1]), np.ones(points.shape[:-1])
    for axis in range(2):
        for sign in (-1.0, 1.0):
            p = sign * d[..., axis]
            q = half[axis] - sign * a[axis]
            with np.errstate(divide="ignore", invalid="ignore"):
                r = q / p
            parallel_outside = (p == 0) & (q < 0)
            t0 = np.where(p < 0, np.maximum(t0, r), t0)
            t1 = np.where(p > 0, np.minimum(t1, r), t1)
            t1 = np.where(parallel_outside, -1.0, t1)
    return t0 <= t1
