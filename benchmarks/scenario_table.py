"""The rule-based expert on the scenario suites (envs/scenarios/): per scenario type and town, success
(route completed without a collision), collision rate, collision speed, the smallest time-to-collision
and the driving score; and what the scenarios cost in speed: env steps per second of the expert's
episodes on the same routes (same starts, goals and seeds) with and without their scenarios, in the
same process. One JSON object on stdout and a markdown table.

    MENTOR_MAPS_DIR=../shared/maps/carla .venv/bin/python benchmarks/scenario_table.py --out outputs/scenarios
    .venv/bin/python benchmarks/scenario_table.py --suites scenarios_train --routes 0-5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import envs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the project's root

from benchmarks.expert_table import end_reason  # noqa: E402
from drive import parse_routes, run_episode  # noqa: E402
from envs.route_suites import load_suite  # noqa: E402

logger = logging.getLogger("scenario_table")


def drive_suite(
    name: str, routes: list[int], traffic: str, seed: int, maps_dir: str | None
) -> tuple[dict, float, float]:
    """Every route of suite `name`: its result, and env steps per second over them all with their
    scenarios and without (the same routes and seeds, the scenario taken out)."""
    suite = load_suite(name)
    env = gym.make(envs.ENV_ID, town=suite.town, traffic=traffic, route_suite=name, maps_dir=maps_dir)
    results, steps, seconds = {}, {True: 0, False: 0}, {True: 0.0, False: 0.0}
    try:
        for route in routes:  # interleaved, so that the machine's load falls on both alike
            for with_scenario in (True, False):
                spec = suite.routes[route] if with_scenario else dataclasses.replace(suite.routes[route], scenario=None)
                started = time.monotonic()
                result = run_episode(env, spec, seed + route)
                seconds[with_scenario] += time.monotonic() - started
                steps[with_scenario] += round(result["duration_s"] / 0.1)
                if with_scenario:
                    results[route] = result
    finally:
        env.close()
    rates = {key: steps[key] / seconds[key] for key in steps}
    return results, rates[True], rates[False]


def by_type(suite_name: str, results: dict) -> dict[str, dict]:
    suite = load_suite(suite_name)
    groups: dict[str, list] = {}
    for route, result in results.items():
        groups.setdefault(suite.routes[route].scenario.type, []).append((route, result))
    table = {}
    for kind, rows in groups.items():
        collided = [r for _, r in rows if r["collisions"] > 0]
        table[kind] = {
            "episodes": len(rows),
            "success": float(np.mean([r["scenario_success"] for _, r in rows])),
            "triggered": float(np.mean([r["scenario_triggered"] for _, r in rows])),
            "collision_rate": float(np.mean([r["collision_rate"] for _, r in rows])),
            "collision_speed_kmh": float(np.mean([r["collision_speed_kmh"] for r in collided])) if collided else None,
            "min_ttc_s": float(np.min([r["scenario_min_ttc_s"] for _, r in rows])),
            "min_distance_m": float(np.min([r["scenario_min_distance_m"] for _, r in rows])),
            "driving_score": float(np.mean([r["driving_score"] for _, r in rows])),
            "ends": {str(route): end_reason(r) for route, r in rows},
        }
    return table


def markdown(towns: dict[str, dict]) -> str:
    lines = [
        "| town | scenario type | routes | success | collision rate | collision km/h | min TTC s | DS | ends |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for town, table in towns.items():
        for kind, t in table["types"].items():
            speed = f"{t['collision_speed_kmh']:.1f}" if t["collision_speed_kmh"] is not None else "-"
            ends = ", ".join(sorted(set(t["ends"].values())))
            lines.append(
                f"| {town} | {kind} | {t['episodes']} | {t['success']:.2f} | {t['collision_rate']:.2f} | {speed} "
                f"| {t['min_ttc_s']:.2f} | {t['driving_score']:.3f} | {ends} |"
            )
    lines.append("")
    lines.append("| town | steps/s with the scenarios | the same routes without | ratio |")
    lines.append("|---|---:|---:|---:|")
    for town, table in towns.items():
        lines.append(
            f"| {town} | {table['steps_per_s']:.0f} | {table['plain_steps_per_s']:.0f} | {table['speed_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default="scenarios_train,scenarios_eval", help="comma-separated scenario suites")
    parser.add_argument("--routes", default="0-23", help="route indices of each suite")
    parser.add_argument("--traffic", default="regular")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--maps-dir", default=None)
    parser.add_argument("--out", default="outputs/scenarios", help="directory for scenario_table.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)

    towns = {}
    for name in args.suites.split(","):
        town = load_suite(name).town
        routes = parse_routes(args.routes)
        results, rate, plain_rate = drive_suite(name, routes, args.traffic, args.seed, args.maps_dir)
        towns[town] = {
            "suite": name,
            "types": by_type(name, results),
            "steps_per_s": rate,
            "plain_steps_per_s": plain_rate,
            "speed_ratio": rate / plain_rate,
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scenario_table.md").write_text(markdown(towns))
    print(json.dumps({"traffic": args.traffic, "seed": args.seed, "towns": towns}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
