"""The CLIP action-alignment prompt library and margin, against hand-computed values."""

import numpy as np
import pytest

from envs.types import RouteCommand
from feedback.clip_prompts import (
    action_index,
    alignment_margin,
    context_index,
    lateral_bin,
    longitudinal_bin,
    neighbour_mask,
    prompt_library,
    speed_bin,
)
from learners.reward_shaping import RunningMeanStd


def test_720_distinct_prompts_in_context_blocks_of_30():
    library = prompt_library()
    assert len(library) == 720 and len(set(library)) == 720
    assert library[0] == (
        "Command is to turn left at the intersection. The car is currently stopped. "
        "Action behavior: The car is braking hard and going straight."
    )
    # context (follow lane, moderate speed) = 3 * 4 + 2 = 14; behaviour (accelerating, turning right) = 3 * 5 + 4
    assert context_index(int(RouteCommand.LANE_FOLLOW), 3.0) == 14
    assert library[14 * 30 + 19] == (
        "Command is to follow the current lane. The car is driving at a moderate "
        "speed. Action behavior: The car is accelerating and turning right."
    )


@pytest.mark.parametrize("speed,expected", [(0.0, 0), (0.099, 0), (0.1, 1), (1.99, 1), (2.0, 2), (4.49, 2), (4.5, 3)])
def test_speed_bins(speed, expected):
    assert speed_bin(speed) == expected


@pytest.mark.parametrize(
    "throttle,brake,expected",
    [
        (0, 0.6, 0),
        (0, 0.5, 1),
        (0, 0.06, 1),
        (0.9, 0, 2),
        (0.8, 0, 3),
        (0.31, 0, 3),
        (0.3, 0, 4),
        (0.06, 0, 4),
        (0.05, 0, 5),
        (0, 0, 5),
    ],
)
def test_longitudinal_bins(throttle, brake, expected):
    assert longitudinal_bin(throttle, brake) == expected


@pytest.mark.parametrize(
    "steer,expected",
    [(0.0, 0), (0.049, 0), (-0.049, 0), (-0.31, 1), (-0.3, 2), (-0.05, 2), (0.31, 3), (0.3, 4), (0.05, 4)],
)
def test_lateral_bins(steer, expected):
    assert lateral_bin(steer) == expected


def test_action_index_from_signed_acceleration():
    assert action_index(np.array([-0.7, -0.5])) == 0 * 5 + 1  # braking hard, turning left sharply
    assert action_index(np.array([0.5, 0.0])) == 3 * 5 + 0  # accelerating, going straight


def test_neighbours_are_intensity_variants_only():
    mask = neighbour_mask()
    braking_hard_left = 0 * 5 + 2
    assert mask[braking_hard_left].sum() == 4  # {braking hard, braking} x {left sharply, left}
    assert mask[braking_hard_left, 1 * 5 + 1] and not mask[braking_hard_left, 1 * 5 + 4]
    idling_straight = 5 * 5 + 0
    assert np.flatnonzero(mask[idling_straight]).tolist() == [idling_straight]


def test_margin_against_the_hardest_non_neighbour_by_hand():
    logits = np.zeros((1, 30))
    logits[0, 15] = np.log(4.0)  # accelerating + straight: weight 4
    logits[0, 10] = np.log(3.0)  # accelerating fast + straight: a neighbour, weight 3
    logits[0, 0] = np.log(2.0)  # braking hard + straight: not a neighbour, weight 2
    # total weight 4 + 3 + 2 + 27 * 1 = 36: p(a) = 4/36, hardest non-neighbour = 2/36
    assert alignment_margin(logits, np.array([15]))[0] == pytest.approx(2 / 36)
    # choose braking hard: the hardest non-neighbour is accelerating (4/36): margin floors at 0
    assert alignment_margin(logits, np.array([0]))[0] == 0.0


def test_running_mean_std_and_clipped_bonus():
    rms = RunningMeanStd(epsilon=0.0)
    rms.update(np.array([1.0, 2.0, 3.0]))
    rms.update(np.array([4.0]))
    assert rms.mean == pytest.approx(2.5) and rms.var == pytest.approx(1.25)  # population variance of 1..4
    assert rms.bonus(np.array([2.5, 2.5 + np.sqrt(1.25) / 2, 100.0])).tolist() == pytest.approx([0.0, 0.5, 1.0])
    restored = RunningMeanStd()
    restored.load_state_dict(rms.state_dict())
    assert restored.bonus(np.array([0.0]))[0] == rms.bonus(np.array([0.0]))[0]
