"""Drive the expert on a route suite and print the metric table (optionally record a GIF).

python drive.py                                  # Town01 route 0 (generated town without maps)
python drive.py --town Town01 --routes 0-9 --traffic regular
python drive.py --routes 3 --gif expert.gif      # animated RGB BEV with speed/command/reward
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import gymnasium as gym

import envs
from envs.expert import expert_action
from envs.maps import MAPS_ENV_VAR
from envs.metrics import format_table, summarize

logger = logging.getLogger("drive")


def parse_routes(text: str) -> list[int]:
    routes: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        routes.extend(range(int(lo), int(hi or lo) + 1))
    return routes


def run_episode(env, route, seed: int, recorder=None) -> dict:
    """The expert drives `route` (an index into the env's suite, or a RouteSpec) to its end."""
    obs, info = env.reset(seed=seed, options={"route": route})
    name = route if isinstance(route, int) else "(given)"
    reward, done, steps, started = 0.0, False, 0, time.monotonic()
    while not done:
        action = expert_action(*env.unwrapped.ground_truth())
        if recorder is not None:
            recorder.add(info["rgb_bev"], info["speed"], info["command"], reward)
        obs, reward, terminated, truncated, info = env.step(action)
        done, steps = terminated or truncated, steps + 1
        if steps % 500 == 0:
            logger.info("route %s: step %d, completion %.2f", name, steps, info["route_completion"])
    result = info["episode_metrics"]
    logger.info(
        "route %s: %d steps in %.1f s, RC %.3f DS %.3f, ended by %s",
        name,
        steps,
        time.monotonic() - started,
        result["route_completion"],
        result["driving_score"],
        info["infractions"] or ["route completed" if result["arrived"] else "timeout"],
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--town", default=None, help="CARLA town (default Town01, or Generated without maps)")
    parser.add_argument("--traffic", default="regular", choices=["empty", "regular", "dense"])
    parser.add_argument("--suite", default=None, help="route suite (default: the town's own)")
    parser.add_argument("--routes", default="0", help="route indices, e.g. 0-9 or 1,4,7")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--maps-dir", default=None, help=f"directory of .xodr maps (or ${MAPS_ENV_VAR})")
    parser.add_argument("--gif", default=None, help="write an animated GIF of the first route here")
    parser.add_argument("--json", default=None, help="also write the per-route metrics as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    env = gym.make(envs.ENV_ID, town=args.town, traffic=args.traffic, route_suite=args.suite, maps_dir=args.maps_dir)
    town = env.unwrapped.config.town
    logger.info("expert on %s, traffic %s, routes %s", town, args.traffic, args.routes)
    rows = {}
    try:
        for n, route in enumerate(parse_routes(args.routes)):
            recorder = None
            if args.gif and n == 0:
                from envs.recording import GifRecorder

                recorder = GifRecorder()
            rows[f"route {route}"] = run_episode(env, route, args.seed + route, recorder)
            if recorder is not None:
                logger.info("wrote %s", recorder.save(args.gif))
    finally:
        env.close()
    rows[f"mean ({town}, {args.traffic})"] = summarize(list(rows.values()))
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
