"""The rule-based expert (envs.expert) on the NoCrash suites: one JSON object on stdout and a markdown table.

    MENTOR_MAPS_DIR=../shared/maps/carla .venv/bin/python benchmarks/expert_table.py --out outputs/expert_table
    .venv/bin/python benchmarks/expert_table.py --towns Town02 --traffic dense --routes 0-4

Each suite (town x traffic) drives the given routes of the town's own suite (Town01: nocrash_train,
Town02: nocrash_eval) with drive.py's `run_episode`, route r seeded with seed + r like drive.py.
Per suite: mean driving score, route completion and infraction penalty, the number of each
infraction kind over all routes, and how the episodes ended.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

import gymnasium as gym

import envs
from drive import parse_routes, run_episode
from envs.criteria import _FAILURES
from envs.maps import MAPS_ENV_VAR
from envs.metrics import Infraction, summarize

logger = logging.getLogger("expert_table")

_MEANS = ("driving_score", "route_completion", "infraction_penalty")


def end_reason(result: dict) -> str:
    """How an episode ended, from its metrics: arrived, the failure(s) that ended it, or timeout."""
    if result["arrived"]:
        return "route_completed"
    failures = [kind.value for kind in Infraction if kind in _FAILURES and result.get(kind.value, 0.0) > 0]
    if failures:
        return "+".join(failures)
    return "timeout" if result.get(Infraction.TIMEOUT.value, 0.0) > 0 else "other"


def run_suite(town: str, traffic: str, routes: list[int], seed: int, maps_dir: str | None) -> dict:
    """Drive every route of one suite; its summary (means, infraction counts, end reasons, per route)."""
    env = gym.make(envs.ENV_ID, town=town, traffic=traffic, maps_dir=maps_dir)
    started = time.monotonic()
    try:
        results = {route: run_episode(env, route, seed + route) for route in routes}
    finally:
        env.close()
    mean = summarize(list(results.values()))
    infractions = Counter()
    for result in results.values():
        for kind in Infraction:
            infractions[kind.value] += int(result.get(kind.value, 0.0))
    summary = {key: mean[key] for key in _MEANS}
    summary.update(
        episodes=len(results),
        infractions={kind: n for kind, n in infractions.items() if n},
        end_reasons=dict(Counter(end_reason(r) for r in results.values())),
        routes={
            str(route): {
                "driving_score": r["driving_score"],
                "route_completion": r["route_completion"],
                "end": end_reason(r),
            }
            for route, r in results.items()
        },
        wall_s=time.monotonic() - started,
    )
    logger.info(
        "%s %s: DS %.3f RC %.3f IP %.3f in %.0f s",
        town,
        traffic,
        summary["driving_score"],
        summary["route_completion"],
        summary["infraction_penalty"],
        summary["wall_s"],
    )
    return summary


def markdown_table(suites: dict[str, dict]) -> str:
    lines = [
        "| suite | routes | driving score | route completion | infraction penalty | infractions | end reasons |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name, s in suites.items():
        infractions = ", ".join(f"{k} {n}" for k, n in sorted(s["infractions"].items())) or "-"
        ends = ", ".join(f"{k} {n}" for k, n in sorted(s["end_reasons"].items(), key=lambda kv: -kv[1]))
        lines.append(
            f"| {name} | {s['episodes']} | {s['driving_score']:.3f} | {s['route_completion']:.3f} "
            f"| {s['infraction_penalty']:.3f} | {infractions} | {ends} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--towns", default="Town01,Town02", help="comma-separated towns")
    parser.add_argument("--traffic", default="regular,dense", help="comma-separated traffic presets")
    parser.add_argument("--routes", default="0-24", help="route indices, e.g. 0-24 or 1,4,7")
    parser.add_argument("--seed", type=int, default=0, help="route r is seeded with seed + r")
    parser.add_argument("--maps-dir", default=None, help=f"directory of .xodr maps (or ${MAPS_ENV_VAR})")
    parser.add_argument("--out", default="outputs/expert_table", help="directory for expert_table.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("drive").setLevel(logging.INFO)

    routes = parse_routes(args.routes)
    suites = {}
    for town in args.towns.split(","):
        for traffic in args.traffic.split(","):
            suites[f"{town} {traffic}"] = run_suite(town, traffic, routes, args.seed, args.maps_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "expert_table.md"
    maps = args.maps_dir or os.environ.get(MAPS_ENV_VAR, "")
    table.write_text(
        f"# Expert driver, seed {args.seed}, routes {args.routes} (maps: {maps or 'default'})\n\n"
        + markdown_table(suites)
    )
    logger.info("wrote %s", table)
    print(json.dumps({"seed": args.seed, "routes": args.routes, "suites": suites}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
