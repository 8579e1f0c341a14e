"""Synthetic BEV masks with the env's layout, value sets and roughly its sparsity (envs/bev.py): for
benchmarks and tests that need many distinct, realistic BEV rows without running the simulator."""

from __future__ import annotations

import cv2
import numpy as np


def synthetic_bev(rng: np.random.Generator) -> np.ndarray:
    """One uint8 [15, 96, 96] BEV: a road band (~30 % of pixels), a 16 px route, broken lane markings
    (120), vehicle and walker boxes over the four history frames, now and then a stop line (80/170/255)."""
    bev = np.zeros((15, 96, 96), np.uint8)
    angle = rng.uniform(-0.6, 0.6)
    centre = np.array([48 + rng.uniform(-10, 10), 48.0])
    direction = np.array([np.sin(angle), -np.cos(angle)])
    a, b = (centre - 80 * direction).astype(np.int32), (centre + 80 * direction).astype(np.int32)
    cv2.line(bev[0], tuple(a), tuple(b), 255, int(rng.integers(24, 34)))  # road
    if rng.random() < 0.4:  # a crossing road
        cv2.line(bev[0], (0, int(rng.integers(10, 60))), (95, int(rng.integers(10, 60))), 255, 26)
    cv2.line(bev[1], tuple(centre.astype(np.int32) + (3, 0)), tuple(b + (3, 0)), 255, 8)  # route
    for offset in (-6, 6):  # broken markings
        for t in range(-80, 80, 6):
            p = centre + t * direction + (offset, 0)
            q = p + 3 * direction
            cv2.line(bev[2], tuple(p.astype(np.int32)), tuple(q.astype(np.int32)), 120, 1)
    boxes = [(rng.uniform(10, 86, 2), rng.uniform(-1, 1) * 3, rng.uniform(0, np.pi)) for _ in range(rng.integers(0, 5))]
    walkers = [(rng.uniform(10, 86, 2), rng.uniform(-1, 1)) for _ in range(rng.integers(0, 3))]
    light = rng.choice([0, 80, 170, 255], p=[0.5, 0.25, 0.05, 0.2])
    for frame in range(4):
        for (x, y), speed, yaw in boxes:
            rect = ((x, y - speed * frame), (4.5, 2.0), np.degrees(yaw))
            cv2.fillPoly(bev[3 + frame], [cv2.boxPoints(rect).astype(np.int32)], 255)
        for (x, y), speed in walkers:
            top = int(y + speed * frame)
            cv2.rectangle(bev[7 + frame], (int(x), top), (int(x) + 1, top + 1), 255, -1)
        if light:
            row = int(30 + 2 * frame)
            cv2.rectangle(bev[11 + frame], (40, row), (56, row + 2), int(light), -1)
    return bev


def synthetic_bevs(rng: np.random.Generator, n: int) -> np.ndarray:
    """n of them, uint8 [n, 15, 96, 96]."""
    return np.stack([synthetic_bev(rng) for _ in range(n)]) if n else np.zeros((0, 15, 96, 96), np.uint8)
