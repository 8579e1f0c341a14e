"""Parity of the CARLA map (carla.Map built offline from the xodr) with the SUMO net, as JSON.

    MENTOR_MAPS_DIR=../shared/maps/carla .venv/bin/python benchmarks/carla_parity.py \
        [--towns Town01 Town02] [--poses 200] [--pairs 100] [--seed 0]

Per town: IoU of the 192 px ego-centred road masks rendered from each at the same poses (sampled
on the CARLA map's driving-lane centre lines, any lane, junctions included); route agreement
(fraction of one route's points within 2.5 m of the other route's polyline, each way; a pair
agrees when both fractions are >= 0.9) between random points on lane interiors at least 80 m
apart, against the SUMO backend's planner; per-point command agreement on the agreeing routes;
signals: distance from each traffic-light stop line read from carla.Map landmarks to the nearest
SUMO stop line, and whether routes cross the same lights at the same places; and timings.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import time

import numpy as np

from envs.carla.parity import TownPair, polyline_agreement
from envs.carla.signals import lights_on_route, read_signal_lines
from envs.carla.town_map import CarlaTownMap
from envs.maps import MapSearch
from envs.sumo.network import RoutePlanningError


def _signals(pair: TownPair, pairs) -> dict:
    lines = [line for line in read_signal_lines(pair.carla) if line.kind == "light"]
    sumo = np.array([line.centre for line in pair.network.stop_lines])
    nearest = np.array([np.min(np.linalg.norm(sumo - line.centre, axis=1)) for line in lines])
    same, crossed = 0, 0
    for start, goal in pairs:
        try:
            _, sumo_route = pair.network.plan(tuple(start), tuple(goal))
            carla_route = pair.carla.plan(tuple(start), tuple(goal))
        except RoutePlanningError:
            continue
        if min(polyline_agreement(carla_route.xy, sumo_route.xy)) < 0.9:
            continue  # different roads: their lights differ too
        on_carla = [s for s, _ in lights_on_route(carla_route, lines)]
        on_sumo = [s for s, _ in lights_on_route(sumo_route, lines)]
        crossed += len(on_carla)
        same += len(on_carla) == len(on_sumo) and bool(np.all(np.abs(np.subtract(on_carla, on_sumo)) <= 3.0))
    return {
        "light_lines_carla": len(lines),
        "light_lines_sumo": len(sumo),
        "line_to_sumo_m_median": float(np.median(nearest)),
        "line_to_sumo_m_max": float(np.max(nearest)),
        "agreeing_routes_with_same_lights": same,
        "lights_crossed": crossed,
    }


def _routes(pair: TownPair, pairs) -> dict:
    mins, both, commands, carla_ms, sumo_ms, skipped = [], [], [], [], [], 0
    for start, goal in pairs:
        try:
            t0 = time.perf_counter()
            _, sumo_route = pair.network.plan(tuple(start), tuple(goal))
            t1 = time.perf_counter()
            carla_route = pair.carla.plan(tuple(start), tuple(goal))
            t2 = time.perf_counter()
        except RoutePlanningError:  # SUMO plans from no junction and to no point behind the start
            skipped += 1
            continue
        sumo_ms.append(1e3 * (t1 - t0))
        carla_ms.append(1e3 * (t2 - t1))
        a, b = polyline_agreement(carla_route.xy, sumo_route.xy)
        mins.append(min(a, b))
        both.append((a, b))
        if min(a, b) >= 0.9:
            d = np.linalg.norm(carla_route.xy[:, None] - sumo_route.xy[None], axis=2)
            nearest = d.argmin(axis=1)
            close = d[np.arange(len(nearest)), nearest] <= 2.5
            commands.append(float(np.mean(carla_route.commands[close] == sumo_route.commands[nearest[close]])))
    mins_arr = np.array(mins)
    return {
        "pairs": len(mins),
        "skipped_by_sumo": skipped,
        "agreement_carla_in_sumo_mean": float(np.mean([x for x, _ in both])),
        "agreement_sumo_in_carla_mean": float(np.mean([y for _, y in both])),
        "pairs_agreeing_0.9": float(np.mean(mins_arr >= 0.9)),
        "command_agreement_on_agreeing_routes": float(np.mean(commands)) if commands else None,
        "carla_plan_ms_mean": float(np.mean(carla_ms)),
        "sumo_plan_ms_mean": float(np.mean(sumo_ms)),
    }


def measure(town: str, n_poses: int, n_pairs: int, seed: int) -> dict:
    xodr = MapSearch.from_settings().xodr_path(town).read_text()
    t0 = time.perf_counter()
    standalone = CarlaTownMap.from_xodr(town, xodr)
    t1 = time.perf_counter()
    _ = standalone.static_layers
    t2 = time.perf_counter()
    out = {
        "carla_map_build_s": t1 - t0,
        "carla_static_layers_s": t2 - t1,
        "lanes": len(standalone.segments),
        "intersections": len(standalone.graph.intersections),
    }
    with TownPair(town) as pair:
        poses = pair.sample_poses(n_poses, seed)
        t0 = time.perf_counter()
        iou = pair.iou(poses)
        out["iou_ms_per_pose"] = 1e3 * (time.perf_counter() - t0) / n_poses
        out.update(
            {
                "poses": n_poses,
                "road_iou_mean": float(iou.mean()),
                "road_iou_min": float(iou.min()),
                "road_iou_p05": float(np.percentile(iou, 5)),
            }
        )
        pairs = pair.sample_route_pairs(n_pairs, seed)
        out["routes"] = _routes(pair, pairs)
        out["signals"] = _signals(pair, pairs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--towns", nargs="+", default=["Town01", "Town02"])
    parser.add_argument("--poses", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    results = {town: measure(town, args.poses, args.pairs, args.seed) for town in args.towns}
    print(
        json.dumps(
            {
                "towns": results,
                "seed": args.seed,
                "carla": importlib.metadata.version("carla"),
                "python": platform.python_version(),
                "total_s": time.perf_counter() - started,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
