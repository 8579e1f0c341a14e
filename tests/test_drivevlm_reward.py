"""DriveVLM-RL's reward, pure parts: the attention gate's geometry, VLM-RL's lane factors, the
normalisation of the semantic score, the synthesis, the penalty, and the worker-side row reward
(frames window, gate counting, the reward written at shipping, semantic fields stripped).
Every expected number is worked out by hand in the comment beside it."""

import itertools
import math

import numpy as np
import pytest

from configs.loader import load_config
from configs.schema import DriveVlmConfig
from core.feedback import FeedbackResult, validate
from dataset.rows import ROW_SPEC
from envs.attention_gate import attention_gate, route_projection
from envs.semantic_reward import (
    CenterHistory,
    StepFactors,
    angle_factor,
    centering_factor,
    normalised_score,
    stability_factor,
    synthesize,
    target_speed,
)
from envs.types import Route, RouteCommand
from tests.snapshots import snapshot
from workers.row_reward import DriveVlmReward, EnvReward, make_row_reward

CONFIG = DriveVlmConfig()  # lo -0.03, hi 0, v_max 25 km/h, 3 m, 90 deg, 0.4 m, penalty -10
V_MAX = 25 / 3.6


def route(points) -> Route:
    """A polyline through `points`, sampled every metre (as simulator routes are)."""
    xy = [np.asarray(points[0], float)]
    for a, b in itertools.pairwise(points):
        a, b = np.asarray(a, float), np.asarray(b, float)
        n = round(float(np.linalg.norm(b - a)))
        xy += [a + (b - a) * k / n for k in range(1, n + 1)]
    xy = np.array(xy)
    heading = np.diff(xy, axis=0)
    yaw = np.append(np.arctan2(heading[:, 1], heading[:, 0]), np.arctan2(heading[-1, 1], heading[-1, 0]))
    return Route(xy=xy, yaw=yaw, commands=np.full(len(xy), int(RouteCommand.LANE_FOLLOW)))


def walker(x, y):
    return [x, y, 0.0, 0.5, 0.5]


STRAIGHT = route([(0, 0), (60, 0)])
CORNER = route([(0, 0), (20, 0), (20, 40)])  # 20 m east, then 40 m north


# ----- the gate --------------------------------------------------------------------------------


def test_projection_on_a_straight_route():
    along, lateral = route_projection(np.array([[10.0, 2.0], [30.0, -1.5], [-3.0, 0.0], [70.0, 0.0]]), STRAIGHT)
    np.testing.assert_allclose(along, [10.0, 30.0, -3.0, 60.0])  # behind the start: the first segment extended
    np.testing.assert_allclose(lateral, [2.0, 1.5, 0.0, 10.0])  # past the end: distance to the last point


def test_projection_around_a_corner():
    # (22, 10): nearest point (20, 10) on the northbound leg: 20 m + 10 m along, 2 m aside.
    # (10, 3): nearest point (10, 0) on the first leg (the second leg is 10 m away).
    along, lateral = route_projection(np.array([[22.0, 10.0], [10.0, 3.0]]), CORNER)
    np.testing.assert_allclose(along, [30.0, 10.0])
    np.testing.assert_allclose(lateral, [2.0, 3.0])


@pytest.mark.parametrize(
    "walkers, open_",
    [
        ([], False),  # nobody: closed
        ([walker(10, 2)], True),  # 10 m ahead, 2 m aside
        ([walker(25, 4)], True),  # exactly at both limits (25 m, 4 m): inside
        ([walker(25.5, 0)], False),  # beyond 25 m along the route
        ([walker(10, 4.5)], False),  # 4.5 m aside: too far from the path
        ([walker(-2, 0)], False),  # behind the ego
        ([walker(-2, 0), walker(40, 0), walker(12, -3)], True),  # one of several is enough
    ],
)
def test_gate_on_a_straight_route(walkers, open_):
    assert attention_gate(snapshot(walkers=walkers), STRAIGHT, max_ahead=25.0, max_lateral=4.0) is open_


def test_gate_follows_the_route_not_the_straight_line():
    # (22, 10) is 22.4 m from the ego in a straight line but 30 m along the route.
    assert not attention_gate(snapshot(walkers=[walker(22, 10)]), CORNER, max_ahead=25.0, max_lateral=4.0)
    assert attention_gate(snapshot(walkers=[walker(22, 10)]), CORNER, max_ahead=30.0, max_lateral=4.0)
    # (24, 3) is 5 m from the first leg's end and 4 m beside the second leg, 3 m up it: 23 m ahead.
    assert attention_gate(snapshot(walkers=[walker(24, 3)]), CORNER, max_ahead=25.0, max_lateral=4.0)


# ----- the factors, the normalisation, the synthesis -------------------------------------------


def test_lane_factors_are_vlm_rls():
    assert centering_factor(0.75, 3.0) == pytest.approx(0.75)  # 1 - 0.75 / 3
    assert centering_factor(-1.5, 3.0) == pytest.approx(0.5)  # unsigned
    assert centering_factor(4.0, 3.0) == 0.0  # floored at 0
    assert angle_factor(math.radians(22.5), 90.0) == pytest.approx(0.75)  # 1 - 22.5 / 90
    assert angle_factor(-math.radians(45), 90.0) == pytest.approx(0.5)
    assert angle_factor(math.radians(120), 90.0) == 0.0
    assert stability_factor(0.1, 0.4) == pytest.approx(0.75)  # 1 - 0.1 / 0.4
    assert stability_factor(0.5, 0.4) == 0.0


@pytest.mark.parametrize(
    "score, r_norm",
    [
        (-0.015, 0.5),  # midway between lo = -0.03 and hi = 0
        (-0.03, 0.0),
        (-0.2, 0.0),  # at or below lo: stop
        (0.0, 1.0),
        (0.4, 1.0),  # at or above hi: full target speed
        (-0.0075, 0.75),  # (-0.0075 + 0.03) / 0.03
    ],
)
def test_normalised_score_clips_then_scales(score, r_norm):
    assert normalised_score(score, -0.03, 0.0) == pytest.approx(r_norm)
    assert target_speed(score, CONFIG) == pytest.approx(r_norm * V_MAX)


@pytest.mark.parametrize("z", [-0.01, 0.0, 0.012, 0.03, 0.05])
def test_defaults_reproduce_vlm_rls_published_normalisation(z):
    """VLM-RL (clip_rewarded_sac.py): z = sim(neg) - sim(pos), clipped to [0, 0.03], R_norm = 1 - z / 0.03.
    DriveVLM-RL's static score with alpha = beta = 1 is sim(pos) - sim(neg) = -z."""
    vlm_rl = 1.0 - (min(max(z, 0.0), 0.03) - 0.0) / 0.03
    assert normalised_score(-z, CONFIG.lo, CONFIG.hi) == pytest.approx(vlm_rl)


def factors(speed=0.0, center=0.0, heading=0.0, std=0.0, catastrophic=False):
    return StepFactors(
        speed=speed, center_distance=center, heading_error=heading, center_std=std, catastrophic=catastrophic
    )


def test_synthesis_multiplies_speed_and_lane_factors():
    # R_norm 0.5 -> v_des = V_MAX / 2, driven exactly: r_speed 1; factors 0.75 each: 0.75 ** 3 = 0.421875
    step = factors(speed=V_MAX / 2, center=0.75, heading=math.radians(22.5), std=0.1)
    assert synthesize(-0.015, step, CONFIG) == pytest.approx(0.421875)


def test_synthesis_speed_term():
    # No score: v_des = v_max = 25 km/h; 5 m/s = 18 km/h: r_speed = 1 - 7 / 25 = 0.72
    assert synthesize(None, factors(speed=5.0), CONFIG) == pytest.approx(0.72)
    # A score at or below lo: v_des = 0; 2 m/s = 7.2 km/h: 1 - 7.2 / 25 = 0.712
    assert synthesize(-1.0, factors(speed=2.0), CONFIG) == pytest.approx(0.712)
    # ... 10 m/s = 36 km/h: 1 - 36 / 25 = -0.44 (VLM-RL's r_speed goes negative past 2 v_des)
    assert synthesize(-1.0, factors(speed=10.0), CONFIG) == pytest.approx(-0.44)
    # A safe score, standing still: 1 - 25 / 25 = 0
    assert synthesize(0.5, factors(speed=0.0), CONFIG) == pytest.approx(0.0)


def test_a_catastrophic_step_gets_the_penalty_whatever_the_rest():
    assert synthesize(0.0, factors(speed=V_MAX, catastrophic=True), CONFIG) == -10.0
    assert synthesize(None, factors(center=5.0, catastrophic=True), CONFIG) == -10.0
    assert synthesize(None, factors(catastrophic=True), DriveVlmConfig(penalty=-3.5)) == -3.5


def test_off_the_lane_the_reward_vanishes():
    assert synthesize(0.0, factors(speed=V_MAX, center=3.0), CONFIG) == 0.0
    assert synthesize(0.0, factors(speed=V_MAX, heading=math.pi / 2), CONFIG) == 0.0


def test_weights_and_range_are_configurable():
    config = DriveVlmConfig(lo=-0.1, hi=0.1, v_max=10.0)
    # R_norm = (0.05 + 0.1) / 0.2 = 0.75, v_des = 7.5, speed 5: 1 - 2.5 / 10 = 0.75
    assert synthesize(0.05, factors(speed=5.0), config) == pytest.approx(0.75)


def test_center_history_is_the_population_std_of_the_latest_window():
    history = CenterHistory(window=3)
    assert history.push(0.0) == 0.0
    assert history.push(-0.2) == pytest.approx(0.1)  # |values| 0, 0.2: std 0.1
    assert history.push(0.4) == pytest.approx(math.sqrt(0.08 / 3))  # 0, 0.2, 0.4 around 0.2
    assert history.push(0.4) == pytest.approx(math.sqrt(0.08 / 9))  # 0.2, 0.4, 0.4 around 1/3: the oldest left
    history.reset()
    assert history.push(1.0) == 0.0


# ----- the worker's row reward -----------------------------------------------------------------


def frame(value):
    return np.full((192, 192, 3), value, np.uint8)


def info(value=0, speed=0.0, lateral=0.0, heading=0.0):
    return {"rgb_bev": frame(value), "speed": speed, "lateral": lateral, "heading_error": heading}


def test_window_pads_with_the_first_frame_and_keeps_k_plus_1():
    reward = DriveVlmReward(DriveVlmConfig(history_frames=3))
    reward.start_episode(info(1))
    assert [int(f[0, 0, 0]) for f in reward.window()] == [1, 1, 1, 1]
    for value in (2, 3):
        reward.after_step(info(value), terminated=False)
    assert [int(f[0, 0, 0]) for f in reward.window()] == [1, 1, 2, 3]  # oldest first, padded in front
    for value in (4, 5):
        reward.after_step(info(value), terminated=False)
    assert [int(f[0, 0, 0]) for f in reward.window()] == [2, 3, 4, 5]
    reward.start_episode(info(9))  # a new episode starts afresh
    assert [int(f[0, 0, 0]) for f in reward.window()] == [9, 9, 9, 9]


def test_frames_go_only_with_an_open_gate_and_the_gate_rate_counts():
    reward = DriveVlmReward(DriveVlmConfig(history_frames=1))
    reward.start_episode(info(1))

    def near():
        return snapshot(walkers=[walker(10, 1)]), STRAIGHT

    def empty():
        return snapshot(), STRAIGHT

    assert reward.item_fields({}, empty) == {"gate": False, "frames": None}
    fields = reward.item_fields({}, near)
    assert fields["gate"] is True and len(fields["frames"]) == 2
    reward.item_fields({}, empty)
    reward.item_fields({}, empty)
    assert reward.report()["gate_rate"] == 0.25 and reward.report()["gated_items"] == 1


def pending_row(reward, step_info, terminated=False, score=None, mask=0.0):
    """A row as the worker holds it: asked for semantic_score, the env step's extras attached."""
    row = {"reward": np.float32(1.5), "semantic_score_mask": mask, **reward.after_step(step_info, terminated)}
    if score is not None:
        row["semantic_score"] = score
    return row


def test_rows_ship_with_the_synthesized_reward_and_without_semantic_fields():
    reward = DriveVlmReward(CONFIG)
    reward.start_episode(info())
    # scored: R_norm 0.5, v = v_des; lateral 0.75 (std 0 on the first step); heading 22.5 deg:
    # 1 * 0.75 * 0.75 * 1 = 0.5625
    row = reward.finish(
        pending_row(reward, info(speed=V_MAX / 2, lateral=0.75, heading=math.radians(22.5)), score=-0.015, mask=1.0)
    )
    assert row["reward"] == pytest.approx(0.5625) and row["reward"].dtype == np.float32
    assert set(row) == {"reward"}  # semantic_score, its mask and the factors are gone
    # unscored (mask 0): R_norm 1, v_des 25 km/h; 5 m/s; lateral 0.75 again (std of 0.75, 0.75 = 0):
    # 0.72 * 0.75 = 0.54
    row = reward.finish(pending_row(reward, info(speed=5.0, lateral=0.75)))
    assert row["reward"] == pytest.approx(0.54)
    # an answer that failed validation leaves a mask of 0 even if a value were there
    row = reward.finish(pending_row(reward, info(speed=5.0, lateral=0.75), score=-0.03, mask=0.0))
    assert row["reward"] == pytest.approx(0.54)
    # a failure ends the episode: the penalty, not counted as unscored
    row = reward.finish(pending_row(reward, info(speed=3.0), terminated=True))
    assert row["reward"] == pytest.approx(-10.0)
    report = reward.report()
    assert report["synthesized_steps"] == 4 and report["unscored_steps"] == 2


def test_rows_without_a_transition_keep_their_reward():
    reward = DriveVlmReward(CONFIG)
    last = reward.finish({"reward": np.float32(0.0), "is_last": True})  # the final observation of an episode
    bridge = reward.finish({"reward": np.float32(0.0), "semantic_score_mask": 0.0})  # a simulator failure
    assert last == {"reward": 0.0, "is_last": True} and bridge == {"reward": 0.0}
    assert reward.report()["synthesized_steps"] == 0 and reward.report()["unscored_steps"] == 0


def test_vlm_latency_comes_from_the_answers_of_gated_items():
    reward = DriveVlmReward(CONFIG)
    reward.on_result(FeedbackResult(0, 1, {"semantic_score": 0.1}))  # not gated: no VLM call
    reward.on_result(FeedbackResult(0, 2, {"semantic_score": 0.1, "vlm_latency_s": 0.3}))
    reward.on_result(FeedbackResult(0, 3, {"semantic_score": None, "vlm_latency_s": 0.5}))
    assert reward.report()["vlm_latency_s"] == pytest.approx(0.4) and reward.report()["vlm_answers"] == 2


def test_the_factory_picks_by_the_wanted_feedback():
    assert type(make_row_reward(load_config(None, []))) is EnvReward
    config = load_config(None, ["feedback.model=drivevlm", "feedback.wanted=[semantic_score]"])
    assert isinstance(make_row_reward(config), DriveVlmReward)
    row = {"reward": np.float32(2.0)}
    assert EnvReward().finish(dict(row)) == row and EnvReward().report() == {}


def test_the_replay_row_layout_has_no_semantic_field():
    assert not any(key.startswith("semantic_score") for key in ROW_SPEC)


@pytest.mark.parametrize(
    "value, ok",
    [
        (0.25, True),
        (-0.7, True),
        (np.float32(0.1), True),
        (3, True),
        (float("nan"), False),
        (float("inf"), False),
        (None, False),
        ("0.1", False),
        (True, False),
        (np.array([0.1, 0.2]), False),
    ],
)
def test_semantic_score_validation(value, ok):
    number, available = validate("semantic_score", value)
    assert available is ok and (number is None) is (not ok)


def test_run_metrics_merge_the_workers_drivevlm_counts():
    from runtimes.reporting import drivevlm_metrics

    def report(requested, gated, synthesized, unscored, answers, latency_sum):
        return {
            "feedback": {
                "requested_items": requested,
                "gated_items": gated,
                "synthesized_steps": synthesized,
                "unscored_steps": unscored,
                "vlm_answers": answers,
                "vlm_latency_sum_s": latency_sum,
            }
        }

    merged = drivevlm_metrics([report(100, 10, 98, 2, 10, 5.0), report(300, 30, 300, 6, 20, 4.0)])
    assert merged == {
        "drivevlm/gate_rate": 40 / 400,
        "drivevlm/gated_items": 40.0,
        "drivevlm/unscored_fraction": 8 / 398,
        "drivevlm/vlm_latency_s": 9.0 / 30,
    }
    assert drivevlm_metrics([{"feedback": {"answered": 3}}]) == {}  # a run without the DriveVLM reward
