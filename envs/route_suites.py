"""Route suites: start poses and goals in CARLA coordinates, shipped as JSON under envs/routes/.

NoCrash-like suites (Town01 training, Town02 evaluation, 25 routes each; the traffic preset is
chosen separately) and one for the generated town. `python -m envs.route_suites` regenerates them
from the maps with a fixed seed; they are Mentor's own routes, not copies of NoCrash's.

Scenario suites (`scenarios_train` on Town01, `scenarios_eval` on Town02) put one safety-critical
scenario (envs/scenarios/) on each route: every scenario type several times, on routes of the
NoCrash-like suite of the same town where it can be placed. A route's "scenario" entry is
{"type", "params", "seed"}.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envs.geometry import point_along, polyline_length
from envs.scenarios.library import SCENARIO_TYPES, ScenarioError, make_spec, spec_from_json
from envs.types import RouteSpec

logger = logging.getLogger(__name__)

ROUTES_DIR = Path(__file__).parent / "routes"
RANDOM_SUITE = "random"
_SUITE_SOURCES = {  # suite -> (town, routes, seed)
    "nocrash_train": ("Town01", 25, 101),
    "nocrash_eval": ("Town02", 25, 202),
    "generated": ("Generated", 25, 303),
}
DEFAULT_SUITE_FOR_TOWN = {town: name for name, (town, _, _) in _SUITE_SOURCES.items()}
_SCENARIO_SUITES = {  # suite -> (the suite whose routes it uses, scenarios of each type, seed)
    "scenarios_train": ("nocrash_train", 3, 404),
    "scenarios_eval": ("nocrash_eval", 3, 505),
}
MIN_ROUTE_M, MAX_ROUTE_M = 250.0, 800.0


@dataclass(frozen=True)
class RouteSuite:
    name: str
    town: str
    routes: tuple[RouteSpec, ...]

    def __len__(self) -> int:
        return len(self.routes)


def available_suites() -> list[str]:
    return sorted(p.stem for p in ROUTES_DIR.glob("*.json")) + [RANDOM_SUITE]


def load_suite(name: str) -> RouteSuite:
    path = ROUTES_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown route suite {name!r}; available: {', '.join(available_suites())}")
    return read_suite(path, name)


def read_suite(path: Path, name: str | None = None) -> RouteSuite:
    """A suite file; what does not parse names the file and line, a bad scenario the route."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); fix the file or regenerate it") from None
    try:
        routes = tuple(
            RouteSpec(
                start=tuple(r["start"]),
                goal=tuple(r["goal"]),
                scenario=spec_from_json(r["scenario"], f"{path} route {i}") if "scenario" in r else None,
            )
            for i, r in enumerate(data["routes"])
        )
        return RouteSuite(name=name or path.stem, town=data["town"], routes=routes)
    except ScenarioError:
        raise
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"{path}: a suite is {{'town': ..., 'routes': [{{'start': [x, y, yaw], 'goal': [x, y]}}, ...]}} ({exc!r})"
        ) from None


def random_route(
    network, rng: np.random.Generator, min_m: float = MIN_ROUTE_M, max_m: float = MAX_ROUTE_M, tries: int = 200
) -> RouteSpec:
    """A route between two random lane points whose planned length lies in [min_m, max_m].

    `network` is either backend's town: `route_lanes()` (centre lines to start and end on),
    `plan_route(start_xy, goal_xy) -> Route` and `to_carla`."""
    lanes = [shape for shape in network.route_lanes() if polyline_length(shape)[-1] > 25.0]
    for _ in range(tries):
        a, b = (lanes[i] for i in rng.integers(len(lanes), size=2))
        pa, pb = (point_along(shape, rng.uniform(10.0, polyline_length(shape)[-1] - 10.0)) for shape in (a, b))
        try:
            route = network.plan_route(tuple(pa[:2]), tuple(pb[:2]))
        except ValueError:
            continue
        if min_m <= route.length <= max_m:
            sx, sy, syaw = network.to_carla(float(route.xy[0, 0]), float(route.xy[0, 1]), float(route.yaw[0]))
            gx, gy, _ = network.to_carla(float(route.xy[-1, 0]), float(route.xy[-1, 1]))
            return RouteSpec(start=(round(sx, 2), round(sy, 2), round(syaw, 2)), goal=(round(gx, 2), round(gy, 2)))
    raise RuntimeError(f"no route of {min_m}-{max_m} m found in {tries} tries")


def generate(name: str, maps_dir: str | None = None) -> Path:
    from envs.sumo.simulation import SumoSettings, SumoSimulation

    town, count, seed = _SUITE_SOURCES[name]
    sim = SumoSimulation(SumoSettings(town=town, traffic="empty", maps_dir=maps_dir))
    try:
        rng = np.random.default_rng(seed)
        routes = [random_route(sim.network, rng) for _ in range(count)]
    finally:
        sim.close()
    path = ROUTES_DIR / f"{name}.json"
    payload = {
        "town": town,
        "frame": "carla",
        "units": "metres, degrees",
        "description": f"{count} Mentor routes on {town}, {MIN_ROUTE_M:.0f}-{MAX_ROUTE_M:.0f} m, seed {seed}",
        "routes": [{"id": i, "start": list(r.start), "goal": list(r.goal)} for i, r in enumerate(routes)],
    }
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def generate_scenarios(name: str, maps_dir: str | None = None) -> Path:
    """A scenario suite: each type `per_type` times, each on the first route of the base suite (in a
    seeded order) where it can be placed."""
    from envs.scenarios.placement import place
    from envs.sumo.simulation import SumoSettings, SumoSimulation

    base_name, per_type, seed = _SCENARIO_SUITES[name]
    base = load_suite(base_name)
    rng = np.random.default_rng(seed)
    sim = SumoSimulation(SumoSettings(town=base.town, traffic="empty", maps_dir=maps_dir))
    entries = []
    try:
        planned = [_plan(sim.network, spec) for spec in base.routes]
        for kind in SCENARIO_TYPES:
            for _ in range(per_type):
                spec = make_spec(kind, seed=int(rng.integers(2**31 - 1)))
                for i in rng.permutation(len(base.routes)):
                    try:
                        place(spec, planned[i])
                    except ScenarioError:
                        continue
                    r = base.routes[i]
                    entries.append({"start": list(r.start), "goal": list(r.goal), "scenario": spec.to_json()})
                    break
                else:
                    raise ScenarioError(f"scenario {kind} fits no route of {base_name}")
    finally:
        sim.close()
    path = ROUTES_DIR / f"{name}.json"
    payload = {
        "town": base.town,
        "frame": "carla",
        "units": "metres, degrees",
        "description": f"{per_type} of each scenario type on routes of {base_name}, seed {seed}",
        "routes": [{"id": i, **entry} for i, entry in enumerate(entries)],
    }
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def _plan(network, spec: RouteSpec):
    start_x, start_y, _ = network.from_carla(*spec.start)
    goal_x, goal_y, _ = network.from_carla(*spec.goal, 0.0)
    return network.plan_route((start_x, start_y), (goal_x, goal_y))


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate the shipped route suites from the maps.")
    parser.add_argument("suites", nargs="*", default=[*_SUITE_SOURCES, *_SCENARIO_SUITES], help="suite names")
    parser.add_argument("--maps-dir", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    for name in args.suites:
        # one simulation per process: each suite in turn, closing the previous one
        made = generate_scenarios(name, args.maps_dir) if name in _SCENARIO_SUITES else generate(name, args.maps_dir)
        logger.info("wrote %s", made)


if __name__ == "__main__":
    main()
