import math

import numpy as np

from envs.collision import colliding
from envs.geometry import box_corners


def test_corners_of_an_axis_aligned_box():
    corners = box_corners(np.array([[1.0, 2.0, 0.0, 4.0, 2.0]]))[0]
    assert sorted(map(tuple, corners.round(6).tolist())) == [(-1, 1), (-1, 3), (3, 1), (3, 3)]


def test_overlap_and_separation_including_rotated_boxes():
    ego = np.array([0.0, 0.0, 0.0, 4.0, 2.0])
    others = np.array(
        [
            [3.9, 0.0, 0.0, 4.0, 2.0],  # bumpers overlap by 0.1 m
            [4.1, 0.0, 0.0, 4.0, 2.0],  # 0.1 m gap
            [0.0, 2.5, 0.0, 4.0, 2.0],  # beside, 0.5 m gap
            # rotated 45 degrees: its corner reaches 2 + 1.414 - 0.05 ... towards the ego's front face
            [2.0 + math.sqrt(2) - 0.05, 0.0, math.pi / 4, 2.0, 2.0],
            [2.0 + math.sqrt(2) + 0.05, 0.0, math.pi / 4, 2.0, 2.0],
        ]
    )
    assert colliding(ego, others).tolist() == [True, False, False, True, False]


def test_no_others():
    assert colliding(np.array([0, 0, 0, 4, 2.0]), np.zeros((0, 5))).shape == (0,)
