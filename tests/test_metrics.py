"""Episode metrics against hand-computed leaderboard numbers."""

from __future__ import annotations

import json
import math

import pytest

from envs.metrics import (
    DEFAULT_TABLE_KEYS,
    EpisodeMetrics,
    Infraction,
    format_table,
    infraction_penalty,
    summarize,
)


def test_infraction_penalty_hand_computed():
    # (1 - 0.1) * 0.60 * 0.70 = 0.9 * 0.42 = 0.378
    assert infraction_penalty({"collision_vehicle": 1, "red_light": 1}, 0.1) == pytest.approx(0.378)
    # every factor once, no off-lane: 0.65 * 0.60 * 0.50 * 0.70 * 0.80 = 0.10920
    every = {kind.value: 1 for kind in Infraction}
    assert infraction_penalty(every, 0.0) == pytest.approx(0.1092)
    # repeated infractions compound: 0.5^2 * 0.8^3 = 0.25 * 0.512 = 0.128
    assert infraction_penalty({Infraction.COLLISION_PEDESTRIAN: 2, "stop_sign": 3}, 0.0) == pytest.approx(0.128)
    # kinds without a factor do not change the penalty
    assert infraction_penalty({"timeout": 1, "blocked": 2, "off_road": 1, "route_deviation": 1}, 0.0) == 1.0
    assert infraction_penalty({}, 0.0) == 1.0


def test_infraction_penalty_rejects_bad_input():
    with pytest.raises(ValueError):
        infraction_penalty({"colision_vehicle": 1}, 0.0)
    with pytest.raises(ValueError):
        infraction_penalty({"red_light": -1}, 0.0)
    with pytest.raises(ValueError):
        infraction_penalty({}, math.nan)


def _drive_known_episode() -> EpisodeMetrics:
    """20 steps of 0.5 s at 10 m/s, 5 m each; off lane on 4 of them; 1 vehicle crash, 2 red lights."""
    metrics = EpisodeMetrics(route_length_m=133.0, dt=0.5)
    for i in range(20):
        infractions: list[Infraction | str] = []
        if i == 3:
            infractions.append(Infraction.COLLISION_VEHICLE)
        if i in (7, 12):
            infractions.append("red_light")
        metrics.step(
            speed=10.0,
            accel=0.0,
            distance_travelled=5.0,
            off_lane=i in (0, 1, 2, 3),
            infractions=infractions,
            reward=0.5,
        )
    metrics.set_route_completion(0.75)
    return metrics


def test_known_episode_result():
    r = _drive_known_episode().result()
    assert all(isinstance(v, float) for v in r.values())
    assert r["return"] == pytest.approx(10.0)  # 20 * 0.5
    assert r["distance_m"] == pytest.approx(100.0)  # 20 * 5 m
    assert r["duration_s"] == pytest.approx(10.0)  # 20 * 0.5 s
    assert r["mean_speed"] == pytest.approx(10.0)  # 100 m / 10 s
    assert r["off_lane_fraction"] == pytest.approx(0.2)  # 4 * 5 m / 100 m
    assert r["route_completion"] == 0.75
    # IP = (1 - 0.2) * 0.60 * 0.70^2 = 0.8 * 0.6 * 0.49 = 0.2352
    assert r["infraction_penalty"] == pytest.approx(0.2352)
    # DS = 0.75 * 0.2352 = 0.1764
    assert r["driving_score"] == pytest.approx(0.1764)
    assert r["arrived"] == 0.0 and r["strict_success"] == 0.0
    # rates over 100 m = 0.1 km: 1 / 0.1 = 10 crashes/km, 2 / 0.1 = 20 red lights/km
    assert r["collision_vehicle"] == 1.0 and r["red_light"] == 2.0
    assert r["collision_vehicle_per_km"] == pytest.approx(10.0)
    assert r["red_light_per_km"] == pytest.approx(20.0)
    for kind in Infraction:
        assert f"{kind.value}_per_km" in r and kind.value in r
        if kind not in (Infraction.COLLISION_VEHICLE, Infraction.RED_LIGHT):
            assert r[kind.value] == 0.0 and r[f"{kind.value}_per_km"] == 0.0
    # safety metrics: steps 3, 7 and 12 had infractions -> cost 3; 1 collision in 10 s
    assert r["cost"] == 3.0 and r["collisions"] == 1.0 and r["collision_rate"] == 1.0
    assert r["collisions_per_km"] == pytest.approx(10.0)  # 1 / 0.1 km
    assert r["collisions_per_min"] == pytest.approx(6.0)  # 1 / (10 s / 60)
    assert r["collision_speed_kmh"] == pytest.approx(36.0)  # 10 m/s * 3.6
    # F(10 m/s, 0) = 181.1907 + 0.5*1.226*0.23*2.2*100 = 212.2085 N; P = 2122.085 W
    # fuel = 2122.085 / 0.3 / 44e6 = 1.60764015e-4 kg/s (constant, so also the mean)
    assert r["fuel_rate"] == pytest.approx(1.6076401515151514e-04, rel=1e-9)
    # 1.60764015e-4 kg/s * 10 s = 1.60764e-3 kg over 0.1 km -> 1.60764 kg / 100 km
    assert r["fuel_per_100km"] == pytest.approx(1.6076401515151513, rel=1e-9)
    # Found-RL's compute_Icell: P_cell = 2122.085 / 0.9 / 0.95 / 1000 cells = 2.4819708 W;
    # I = 2 P / (370 + sqrt(370^2 - 0.4 P)) = 0.0067080412 A
    assert r["battery_cell_current"] == pytest.approx(0.006708041243285539, rel=1e-9)


def test_mean_cell_current_is_signed():
    metrics = EpisodeMetrics(route_length_m=10.0, dt=0.1)
    metrics.step(5.0, 1.0, 0.5, False, [], 0.0)  # +0.0350982490 A per cell, 8.0617240530e-4 kg/s
    metrics.step(5.0, -2.0, 0.5, False, [], 0.0)  # -0.0496011752 A per cell (regen), 0 kg/s
    r = metrics.result()
    # (0.0350982490 - 0.0496011752) / 2 = -0.0072514631
    assert r["battery_cell_current"] == pytest.approx(-0.007251463114440082, rel=1e-9)
    # (8.0617240530e-4 * 0.1 + 0) / 0.2 s = 4.0308620265e-4 kg/s
    assert r["fuel_rate"] == pytest.approx(4.030862026515151e-04, rel=1e-9)


def test_rate_floor_for_short_episodes():
    metrics = EpisodeMetrics(route_length_m=50.0, dt=0.05)
    metrics.step(0.0, 0.0, 0.0, False, ["collision_static"], -1.0)
    r = metrics.result()
    # 0 m driven: rate uses the 0.01 km floor -> 1 / 0.01 = 100 per km
    assert r["collision_static_per_km"] == pytest.approx(100.0)
    assert r["mean_speed"] == 0.0 and r["off_lane_fraction"] == 0.0
    assert r["infraction_penalty"] == pytest.approx(0.65)


def test_empty_episode_is_finite():
    r = EpisodeMetrics(route_length_m=50.0, dt=0.05).result()
    assert all(math.isfinite(v) for v in r.values())
    assert r["driving_score"] == 0.0 and r["battery_cell_current"] == 0.0
    assert r["cost"] == 0.0 and r["collision_rate"] == 0.0
    assert r["collisions_per_km"] == 0.0 and r["collisions_per_min"] == 0.0
    assert "collision_speed_kmh" not in r


def _drive_safety_episode() -> EpisodeMetrics:
    """5 steps of 3 s; speeds 4, 5, 3, 2, 6 m/s drive 12, 15, 9, 6, 18 m = 60 m in 15 s.

    Step 1: vehicle collision at 5 m/s; step 2: static collision and a red light at 3 m/s;
    step 3: timeout only."""
    metrics = EpisodeMetrics(route_length_m=100.0, dt=3.0)
    steps = [
        (4.0, []),
        (5.0, [Infraction.COLLISION_VEHICLE]),
        (3.0, ["collision_static", "red_light"]),
        (2.0, [Infraction.TIMEOUT]),
        (6.0, []),
    ]
    for speed, infractions in steps:
        metrics.step(
            speed=speed, accel=0.0, distance_travelled=speed * 3.0, off_lane=False, infractions=infractions, reward=0.0
        )
    return metrics


def test_safety_metrics_hand_computed():
    r = _drive_safety_episode().result()
    assert r["distance_m"] == pytest.approx(60.0) and r["duration_s"] == pytest.approx(15.0)
    # cost: steps 1, 2 and 3 have an infraction (timeout counts, like the replay's step cost);
    # the two infractions of step 2 cost 1, not 2
    assert r["cost"] == 3.0
    assert r["collisions"] == 2.0  # vehicle + static; the red light is not a collision
    assert r["collision_rate"] == 1.0
    assert r["collisions_per_km"] == pytest.approx(2.0 / 0.06)  # 33.333 per km
    assert r["collisions_per_min"] == pytest.approx(8.0)  # 2 / (15 s / 60) = 2 / 0.25 min
    # (5 + 3) / 2 = 4 m/s = 14.4 km/h
    assert r["collision_speed_kmh"] == pytest.approx(14.4)


def test_collision_speed_counts_each_event():
    metrics = EpisodeMetrics(route_length_m=100.0, dt=1.0)
    metrics.step(10.0, 0.0, 10.0, False, ["collision_vehicle", "collision_pedestrian"], 0.0)
    metrics.step(4.0, 0.0, 4.0, False, ["collision_static"], 0.0)
    r = metrics.result()
    # events at 10, 10 and 4 m/s: 24 / 3 = 8 m/s = 28.8 km/h; 2 steps with infractions
    assert r["collision_speed_kmh"] == pytest.approx(28.8)
    assert r["collisions"] == 3.0 and r["cost"] == 2.0
    assert r["collisions_per_min"] == pytest.approx(90.0)  # 3 / (2 s / 60)
    assert r["collisions_per_km"] == pytest.approx(3.0 / 0.014)  # 14 m driven


def test_episode_without_collision_has_no_collision_speed():
    metrics = EpisodeMetrics(route_length_m=100.0, dt=1.0)
    metrics.step(7.0, 0.0, 7.0, False, ["red_light"], 0.0)
    metrics.step(7.0, 0.0, 7.0, False, [], 0.0)
    r = metrics.result()
    assert "collision_speed_kmh" not in r
    assert r["cost"] == 1.0 and r["collisions"] == 0.0 and r["collision_rate"] == 0.0
    assert r["collisions_per_km"] == 0.0 and r["collisions_per_min"] == 0.0


def test_strict_success():
    clean = EpisodeMetrics(route_length_m=20.0, dt=0.1)
    for _ in range(4):
        clean.step(10.0, 0.0, 1.0, False, [], 1.0)
    clean.set_route_completion(1.0)
    r = clean.result()
    assert r["arrived"] == 1.0 and r["strict_success"] == 1.0 and r["driving_score"] == 1.0

    dirty = EpisodeMetrics(route_length_m=20.0, dt=0.1)
    dirty.step(10.0, 0.0, 1.0, False, [Infraction.TIMEOUT], 1.0)
    dirty.set_route_completion(0.9995)  # >= 0.999 counts as arrived
    r = dirty.result()
    assert r["arrived"] == 1.0 and r["strict_success"] == 0.0
    assert r["infraction_penalty"] == 1.0  # timeout has no factor, but it still breaks strict success


def test_route_completion_validation():
    metrics = EpisodeMetrics(route_length_m=200.0, dt=0.1)
    with pytest.raises(ValueError):
        metrics.set_route_completion(math.nan)
    metrics.set_route_completion(1.3)
    assert metrics.result()["route_completion"] == 1.0
    metrics.set_route_completion(-0.2)
    assert metrics.result()["route_completion"] == 0.0
    metrics.set_route_progress_m(50.0)  # 50 / 200
    assert metrics.result()["route_completion"] == pytest.approx(0.25)


def test_step_and_constructor_validation():
    with pytest.raises(ValueError):
        EpisodeMetrics(route_length_m=10.0, dt=0.0)
    metrics = EpisodeMetrics(route_length_m=10.0, dt=0.1)
    with pytest.raises(ValueError):
        metrics.step(1.0, 0.0, -0.1, False, [], 0.0)
    with pytest.raises(ValueError):
        metrics.step(1.0, 0.0, 0.1, False, ["not_an_infraction"], 0.0)
    with pytest.raises(ValueError):
        metrics.step(1.0, 0.0, 0.1, False, [], math.nan)


def test_state_dict_round_trip():
    original = _drive_known_episode()
    state = json.loads(json.dumps(original.state_dict()))  # must survive JSON checkpoints
    restored = EpisodeMetrics(route_length_m=1.0, dt=1.0)
    restored.load_state_dict(state)
    assert restored.result() == original.result()
    assert restored.counts == {**{k.value: 0 for k in Infraction}, "collision_vehicle": 1, "red_light": 2}
    # both keep accumulating identically after the restore
    for metrics in (original, restored):
        metrics.step(8.0, 0.5, 4.0, True, ["stop_sign"], 0.25)
    assert restored.result() == original.result()
    # the state dict is a copy, not a view
    state = original.state_dict()
    state["counts"]["red_light"] = 99
    assert original.counts["red_light"] == 2
    with pytest.raises(ValueError):
        restored.load_state_dict({**state, "counts": {"bogus": 1}})


def test_state_dict_round_trip_keeps_safety_totals():
    original = _drive_safety_episode()
    state = json.loads(json.dumps(original.state_dict()))
    assert state["cost"] == 3.0 and state["collision_speed_sum"] == pytest.approx(8.0)
    restored = EpisodeMetrics(route_length_m=1.0, dt=1.0)
    restored.load_state_dict(state)
    assert restored.result() == original.result()
    assert restored.result()["collision_speed_kmh"] == pytest.approx(14.4)


def test_load_old_state_dict_without_safety_fields():
    state = _drive_known_episode().state_dict()
    del state["cost"], state["collision_speed_sum"]  # a state saved before these fields existed
    restored = EpisodeMetrics(route_length_m=1.0, dt=1.0)
    restored.load_state_dict(state)
    assert restored.totals.cost == 0.0 and restored.totals.collision_speed_sum == 0.0
    r = restored.result()
    assert r["cost"] == 0.0 and r["collisions"] == 1.0
    assert r["driving_score"] == pytest.approx(0.1764)  # the rest restores as before
    restored.step(5.0, 0.0, 5.0, False, ["collision_static"], 0.0)
    assert restored.result()["cost"] == 1.0


def test_summarize_means():
    a = {"return": 1.0, "driving_score": 0.5}
    b = {"return": 3.0, "driving_score": 0.0}
    s = summarize([a, b])
    assert s == {"return": 2.0, "driving_score": 0.25, "episodes": 2.0}
    full = summarize([_drive_known_episode().result()] * 3)
    assert full["episodes"] == 3.0
    assert full["driving_score"] == pytest.approx(0.1764)
    assert summarize([]) == {"episodes": 0.0}


def test_summarize_safety_metrics():
    collided = _drive_safety_episode().result()
    clean = EpisodeMetrics(route_length_m=100.0, dt=1.0)
    clean.step(7.0, 0.0, 7.0, False, [], 0.0)
    s = summarize([collided, clean.result()])
    assert s["collision_rate"] == pytest.approx(0.5)
    assert s["collision_speed_kmh"] == pytest.approx(14.4)  # the collided episode only, no 0 from the clean one
    assert s["cost"] == pytest.approx(1.5)  # (3 + 0) / 2
    assert s["collisions_per_min"] == pytest.approx(4.0)  # (8 + 0) / 2
    assert s["collisions_per_km"] == pytest.approx(2.0 / 0.06 / 2.0)


def test_format_table():
    r = _drive_known_episode().result()
    rows = {"route_00": r, "mean": summarize([r])}
    table = format_table(rows)
    lines = table.splitlines()
    assert len(lines) == 4  # header, rule, two rows
    assert lines[0].split() == ["name", *DEFAULT_TABLE_KEYS]
    assert lines[2].startswith("route_00") and lines[3].startswith("mean")
    for token in ("0.176", "0.235", "10.000", "0.750", "20.000", "0.0067"):
        assert token in lines[2]
    # all lines the same width: right-aligned columns
    assert len({len(line) for line in lines}) == 1

    assert "1.608e-04" in lines[2]  # fuel_rate in kg/s is too small for 3 fixed decimals

    header = lines[0].split()
    for key in ("cost", "collision_rate", "collisions_per_km", "collisions_per_min", "collision_speed_kmh"):
        assert header.index(key) > header.index("collision_pedestrian_per_km")
    cells = dict(zip(header, lines[2].split()))
    assert cells["cost"] == "3.000" and cells["collision_rate"] == "1.000"
    assert cells["collisions_per_km"] == "10.000" and cells["collisions_per_min"] == "6.000"
    assert cells["collision_speed_kmh"] == "36.000"

    clean = EpisodeMetrics(route_length_m=20.0, dt=0.1)
    clean.step(10.0, 0.0, 1.0, False, [], 1.0)
    clean_lines = format_table({"mean": summarize([clean.result()])}).splitlines()
    clean_cells = dict(zip(clean_lines[0].split(), clean_lines[2].split()))
    assert clean_cells["collision_speed_kmh"] == "-" and clean_cells["collision_rate"] == "0.0000"

    custom = format_table({"x": {"return": 1.23456}}, keys=["return", "missing"])
    assert custom.splitlines()[2].split() == ["x", "1.235", "-"]
