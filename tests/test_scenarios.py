"""The scenario library (envs/scenarios/): bad input named, placement, occlusion geometry (fast); every
type triggering on the real simulator with its hazard in the observation, a walker hidden behind a
parked vehicle until it steps out, and the suites through train.py and evaluate.py (sim)."""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from envs.occlusion import visible
from envs.route_suites import load_suite, read_suite
from envs.scenarios.library import SCENARIO_TYPES, ScenarioError, make_spec
from envs.scenarios.placement import place
from envs.types import Route, RouteCommand

# ------------------------------------------------------------------------------------- library


def test_an_unknown_type_names_every_type():
    with pytest.raises(ScenarioError, match="unknown scenario type 'jaywalker'.*pedestrian_crossing.*red_light_runner"):
        make_spec("jaywalker")


def test_a_parameter_outside_its_range_names_the_range_and_unit():
    with pytest.raises(ScenarioError, match=r"walker_speed = 9 is outside \[1.0, 2.5\] m/s"):
        make_spec("pedestrian_crossing", {"walker_speed": 9})


def test_an_unknown_parameter_lists_the_types_parameters():
    with pytest.raises(ScenarioError, match=r"unknown parameter\(s\) gap_m.*trigger_m \[12.0, 40.0\] m"):
        make_spec("cut_in", {"gap_m": 10})


def test_a_spec_is_reproducible_from_its_seed_and_keeps_given_values():
    a, b = make_spec("lead_vehicle_brake", seed=7), make_spec("lead_vehicle_brake", seed=7)
    assert a == b and a != make_spec("lead_vehicle_brake", seed=8)
    assert make_spec("lead_vehicle_brake", {"decel": 6.0}, seed=7).params["decel"] == 6.0
    assert set(a.params) == set(SCENARIO_TYPES["lead_vehicle_brake"].params)


def test_there_are_at_least_eight_types_each_with_a_carla_equivalent():
    assert len(SCENARIO_TYPES) >= 8
    assert all(t.carla_equivalent and t.params for t in SCENARIO_TYPES.values())


# ----------------------------------------------------------------------------------- occlusion


def test_a_walker_behind_a_parked_vehicle_is_hidden_until_part_of_it_shows():
    parked = np.array([[10.0, -3.0, 0.0, 4.6, 1.9]])  # beside the lane, 10 m ahead, on the right
    behind = np.array([[14.0, -3.4, 0.0, 0.5, 0.5]])  # just past its front, in its shadow
    stepping_out = np.array([[14.0, -1.6, 0.0, 0.5, 0.5]])  # its left side is past the vehicle's edge
    in_the_open = np.array([[14.0, 3.0, 0.0, 0.5, 0.5]])
    eye = (0.0, 0.0)
    assert visible(eye, np.concatenate([behind, stepping_out, in_the_open]), parked).tolist() == [False, True, True]
    assert visible(eye, behind, np.zeros((0, 5))).tolist() == [True]  # no occluder, nothing hidden
    assert visible((20.0, -3.4), behind, parked).tolist() == [True]  # seen from the other side


# ----------------------------------------------------------------------------------- placement


def straight_route(length: float, turn_at: float | None = None) -> Route:
    s = np.arange(0.0, length + 1.0, 1.0)
    commands = np.full(len(s), int(RouteCommand.LANE_FOLLOW))
    if turn_at is not None:
        commands[(s >= turn_at) & (s < turn_at + 15)] = int(RouteCommand.LEFT)
    return Route(np.stack([s, np.zeros_like(s)], axis=1), np.zeros_like(s), commands)


def test_a_straight_road_scenario_lands_where_the_lane_is_followed_and_triggers_before_it():
    route = straight_route(400.0, turn_at=200.0)
    for seed in range(20):
        spec = make_spec("occluded_pedestrian", seed=seed)
        p = place(spec, route)
        assert 60.0 <= p.hazard_s <= 360.0 and not (200.0 - 25.0 <= p.hazard_s <= 215.0 + 45.0)
        assert math.isclose(p.hazard_s - p.trigger_s, spec.params["trigger_m"])


def test_a_junction_scenario_goes_into_a_junction_and_one_that_cannot_be_placed_says_why():
    p = place(make_spec("oncoming_in_junction", seed=1), straight_route(400.0, turn_at=200.0))
    assert p.junction_command == int(RouteCommand.LEFT) and 200.0 < p.hazard_s < 215.0
    with pytest.raises(
        ScenarioError, match="oncoming_in_junction cannot be placed on this route: it needs a left turn"
    ):
        place(make_spec("oncoming_in_junction"), straight_route(400.0))
    with pytest.raises(ScenarioError, match="cut_in cannot be placed on this route \\(80 m\\)"):
        place(make_spec("cut_in"), straight_route(80.0))


# --------------------------------------------------------------------------------------- suites


def test_the_shipped_scenario_suites_hold_every_type_three_times_on_their_towns():
    for name, town in (("scenarios_train", "Town01"), ("scenarios_eval", "Town02")):
        suite = load_suite(name)
        assert suite.town == town
        kinds = [r.scenario.type for r in suite.routes]
        assert {k: kinds.count(k) for k in SCENARIO_TYPES} == dict.fromkeys(SCENARIO_TYPES, 3)


def test_a_suite_file_that_does_not_parse_names_the_file_and_line(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"town": "Town01",\n "routes": [\n  {"start": [1, 2, 3] "goal": [4, 5]}\n ]}\n')
    with pytest.raises(ValueError, match=rf"{broken}:3: not valid JSON"):
        read_suite(broken)
    bad = tmp_path / "bad.json"
    route = {"start": [1, 2, 3], "goal": [4, 5]}
    bad.write_text(json.dumps({"town": "Town01", "routes": [route, {**route, "scenario": {"type": "meteor"}}]}))
    with pytest.raises(ScenarioError, match=rf"{bad} route 1: unknown scenario type 'meteor'"):
        read_suite(bad)


# ------------------------------------------------------------------------ on the real simulator

BEV_PX_PER_M, EGO_ROW, EGO_COL = 2.5, 76, 48  # the 96 px BEV: 5 px/m pooled 2x, ego 20 px above the bottom
CURRENT_VEHICLES, CURRENT_WALKERS = 6, 10


def bev_pixels_at(bev: np.ndarray, channel: int, ego, pose) -> int:
    """Non-zero pixels of `channel` within 1 m of where `pose` falls in the BEV."""
    dx, dy = pose.x - ego.x, pose.y - ego.y
    c, s = math.cos(ego.yaw), math.sin(ego.yaw)
    forward, left = c * dx + s * dy, -s * dx + c * dy
    row, col = round(EGO_ROW - forward * BEV_PX_PER_M), round(EGO_COL - left * BEV_PX_PER_M)
    r0, c0 = max(row - 3, 0), max(col - 3, 0)
    return int(np.count_nonzero(bev[channel, r0 : row + 4, c0 : col + 4]))


def in_view(ego, pose) -> bool:
    dx, dy = pose.x - ego.x, pose.y - ego.y
    c, s = math.cos(ego.yaw), math.sin(ego.yaw)
    forward, left = c * dx + s * dy, -s * dx + c * dy
    return -6.0 < forward < 28.0 and abs(left) < 17.0


@pytest.fixture(scope="module")
def town01_env():
    from envs.driving_env import DrivingEnv

    env = DrivingEnv(town="Town01", traffic="empty", route_suite="scenarios_train", seed=0)
    yield env
    env.close()


@pytest.mark.sim
@pytest.mark.parametrize("kind", list(SCENARIO_TYPES))
def test_each_type_triggers_at_its_place_and_its_hazard_appears_in_the_observation(town01_env, kind):
    env = town01_env
    route = [r.scenario.type for r in env.suite.routes].index(kind)
    obs, _ = env.reset(options={"route": route})
    director = env.sim.scenario_director
    assert director is not None and director.spec.type == kind
    seen_in_bev = seen_in_snapshot = 0
    for _ in range(4000):
        obs, _, terminated, truncated, info = env.step(env.expert_action())
        snap = env.ground_truth()[0]
        for actor in director.actors:
            if actor.pose is None or actor.occluder or director.triggered_at is None:
                continue
            boxes = snap.vehicles if actor.kind == "vehicle" else snap.walkers
            if len(boxes) and np.min(np.hypot(boxes[:, 0] - actor.pose.x, boxes[:, 1] - actor.pose.y)) < 0.8:
                seen_in_snapshot += 1
                channel = CURRENT_VEHICLES if actor.kind == "vehicle" else CURRENT_WALKERS
                if in_view(snap.ego, actor.pose) and bev_pixels_at(obs["bev"], channel, snap.ego, actor.pose):
                    seen_in_bev += 1
        if seen_in_bev >= 5 or terminated or truncated:
            break
    assert director.triggered_at is not None, f"{kind} never triggered"
    assert info["scenario"]["type"] == kind and info["scenario"]["triggered"]
    assert seen_in_snapshot >= 5 and seen_in_bev >= 5, (seen_in_snapshot, seen_in_bev)


@pytest.mark.sim
def test_an_occluded_walker_is_not_in_the_walker_channel_until_it_steps_out(town01_env):
    env = town01_env
    route = [r.scenario.type for r in env.suite.routes].index("occluded_pedestrian")
    obs, _ = env.reset(options={"route": route})
    director = env.sim.scenario_director
    walker = next(a for a in director.actors if a.kind == "walker")
    hidden_in_view = shown = 0
    for _ in range(4000):
        obs, _, terminated, truncated, _ = env.step(env.expert_action())
        snap = env.ground_truth()[0]
        if walker.pose is None or not in_view(snap.ego, walker.pose):
            if shown:
                break
            continue
        pixels = bev_pixels_at(obs["bev"], CURRENT_WALKERS, snap.ego, walker.pose)
        parked = director.occluders()[0]
        assert np.min(np.hypot(snap.vehicles[:, 0] - parked[0], snap.vehicles[:, 1] - parked[1])) < 0.1
        if len(snap.hidden_walkers):
            hidden_in_view += 1
            assert pixels == 0, "a hidden walker is drawn in the BEV"
            assert (
                not len(snap.walkers) or np.min(np.hypot(*(snap.walkers[:, :2] - (walker.pose.x, walker.pose.y)).T)) > 1
            )
        elif pixels:
            shown += 1
        if terminated or truncated:
            break
    assert hidden_in_view >= 10 and shown >= 3, (hidden_in_view, shown)


@pytest.mark.sim
def test_the_scenario_suites_run_through_train_py_and_evaluate_py(tmp_path, capsys):
    import evaluate
    import train

    args = ["--config", "configs/quickstart.yaml", "--config", "configs/debug.yaml", "run.mode=local"]
    suites = ["env.town=Town01", "env.route_suite=scenarios_train", "eval.town=Town02"]
    suites += ["eval.route_suite=scenarios_eval", "eval.routes=[3,18]", "eval.max_steps=60"]
    assert train.main([*args, *suites, "run.total_env_steps=200", f"run.runs_dir={tmp_path}"]) == 0
    (run_dir,) = tmp_path.glob("quickstart-*")
    table = json.loads((run_dir / "evaluation.json").read_text())
    assert {"route 3", "route 18", "mean", "scenario occluded_pedestrian", "scenario oncoming_in_junction"} <= set(
        table
    )
    steps = pq.read_table(run_dir / "evaluation_steps.parquet").to_pydict()  # every step of the evaluation
    assert sorted(set(steps["route"])) == [3, 18] and steps["step"][:3] == [0, 1, 2]
    assert len(steps["route"]) == round(sum(table[f"route {r}"]["duration_s"] * 10 for r in (3, 18)))
    assert {"x", "y", "speed", "acc", "steer", "reward/total", "infractions", "scenario/ttc_s"} <= set(steps)
    out, step_file = tmp_path / "eval.json", tmp_path / "steps.parquet"
    command = [str(run_dir), "--suite", "scenarios_eval", "--routes", "0", "--max-steps", "30"]
    assert evaluate.main([*command, "--json", str(out), "--steps", str(step_file)]) == 0
    assert "scenario pedestrian_crossing" in json.loads(out.read_text())
    assert pq.read_table(step_file).num_rows == round(json.loads(out.read_text())["route 0"]["duration_s"] * 10) <= 30


@pytest.mark.sim
def test_a_scenario_episode_is_reproducible_from_its_seed(town01_env):
    """The same route and seed: the same trigger step and the same actor poses, step by step."""
    env = town01_env
    route = [r.scenario.type for r in env.suite.routes].index("cut_in")

    def trajectory():
        env.reset(seed=5, options={"route": route})
        director, poses = env.sim.scenario_director, []
        for _ in range(1500):
            _, _, terminated, truncated, info = env.step(env.expert_action())
            pose = director.actors[0].pose
            poses.append((info["scenario"]["triggered"], None if pose is None else (pose.x, pose.y, pose.speed)))
            if terminated or truncated:
                break
        return poses

    first, second = trajectory(), trajectory()
    assert any(triggered for triggered, _ in first) and first == second
