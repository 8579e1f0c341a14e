"""An animated BEV of each scenario type, driven by the expert: from 3 s before the scenario triggers
to 10 s after, on the first route of the type in the suite (docs/scenarios/<type>.gif). Prints JSON:
per type the route, the trigger step, the closest approach and how the episode ended.

    MENTOR_MAPS_DIR=../shared/maps/carla .venv/bin/python benchmarks/scenario_gifs.py --out docs/scenarios
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
from pathlib import Path

from envs.driving_env import DrivingEnv
from envs.recording import GifRecorder
from envs.route_suites import load_suite
from envs.scenarios.library import SCENARIO_TYPES

logger = logging.getLogger("scenario_gifs")

_BEFORE_STEPS, _AFTER_STEPS, _EVERY = 30, 100, 2


def record(env: DrivingEnv, route: int, path: Path, seed: int) -> dict:
    obs, info = env.reset(seed=seed, options={"route": route})
    director = env.sim.scenario_director
    recorder = GifRecorder(scale=1, every=_EVERY)
    recent = collections.deque(maxlen=_BEFORE_STEPS)  # the frames before the trigger
    reward, trigger_step, step, closest, done = 0.0, None, 0, 1e9, False
    while not done and (trigger_step is None or step < trigger_step + _AFTER_STEPS):
        frame = (info["rgb_bev"], info["speed"], info["command"], reward)
        if trigger_step is None:
            recent.append(frame)
        else:
            recorder.add(*frame)
        obs, reward, terminated, truncated, info = env.step(env.expert_action())
        step, done = step + 1, terminated or truncated
        if trigger_step is None and director.triggered_at is not None:
            trigger_step = step
            for earlier in recent:
                recorder.add(*earlier)
        closest = min(closest, info["scenario"]["distance_m"])
    recorder.save(path)
    return {"route": route, "trigger_step": trigger_step, "closest_m": round(closest, 2), "gif": str(path)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="scenarios_train")
    parser.add_argument("--traffic", default="regular")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/scenarios")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    suite = load_suite(args.suite)
    env = DrivingEnv(town=suite.town, traffic=args.traffic, route_suite=args.suite, seed=args.seed)
    kinds = [r.scenario.type for r in suite.routes]
    out = {}
    try:
        for kind in SCENARIO_TYPES:
            route = kinds.index(kind)
            out[kind] = record(env, route, Path(args.out) / f"{kind}.gif", args.seed + route)
            logger.info("%s: %s", kind, out[kind])
    finally:
        env.close()
    print(json.dumps({"suite": args.suite, "traffic": args.traffic, "types": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
