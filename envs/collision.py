"""Collision detection between oriented boxes (separating-axis test), vectorised over objects."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.geometry import box_corners


@dataclass(frozen=True)
class CollisionEvent:
    kind: str  # "vehicle", "pedestrian" or "static"
    other_id: str
    speed: float  # ego speed at impact, m/s


def colliding(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Boolean [N]: which of `others` [N, 5] overlap `box` [5] (touching edges count as overlap)."""
    others = np.atleast_2d(others)
    hits = np.zeros(len(others), dtype=bool)
    # Cheap circle test first: only boxes whose bounding circles meet need the separating axes.
    reach = 0.5 * (np.hypot(box[3], box[4]) + np.hypot(others[:, 3], others[:, 4]))
    near = np.flatnonzero(np.hypot(others[:, 0] - box[0], others[:, 1] - box[1]) <= reach)
    if len(near):
        hits[near] = _separating_axes(box, others[near])
    return hits


def _separating_axes(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    a = box_corners(box[None])[0]  # [4, 2]
    b = box_corners(others)  # [N, 4, 2]
    axes_a = np.array([[np.cos(box[2]), np.sin(box[2])], [-np.sin(box[2]), np.cos(box[2])]])
    separated = np.zeros(len(others), dtype=bool)
    # The two axes of the ego box, then the two axes of each other box.
    for axis in axes_a:
        pa = a @ axis
        pb = b @ axis
        separated |= (pb.max(axis=1) < pa.min()) | (pb.min(axis=1) > pa.max())
    c, s = np.cos(others[:, 2]), np.sin(others[:, 2])
    for axes in (np.stack([c, s], axis=1), np.stack([-s, c], axis=1)):
        pa = np.einsum("kd,nd->nk", a, axes)
        pb = np.einsum("nkd,nd->nk", b, axes)
        separated |= (pb.max(axis=1) < pa.min(axis=1)) | (pb.min(axis=1) > pa.max(axis=1))
    return ~separated
