"""The Gymnasium driving environment: a simulator backend plus the shared BEV, reward, criteria
and metrics. Observation {"bev": uint8 [15, 96, 96], "state": float32 [10]}; action [acc, steer].
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import cv2
import gymnasium as gym
import numpy as np

from envs.bev import BevRenderer
from envs.criteria import Criteria, CriteriaConfig
from envs.expert import expert_action
from envs.maps import MapSearch
from envs.metrics import EpisodeMetrics, Infraction
from envs.observation import state_vector
from envs.reward import roach_reward
from envs.route_suites import DEFAULT_SUITE_FOR_TOWN, RANDOM_SUITE, load_suite, random_route
from envs.route_tracker import RouteTracker
from envs.scenarios.metrics import ScenarioTracker
from envs.spaces import BEV_SHAPE, RGB_BEV_SHAPE, action_space, observation_space
from envs.sumo.simulation import SumoSettings, SumoSimulation
from envs.types import Control, Route, RouteSpec, Snapshot

logger = logging.getLogger(__name__)

_SEVERE = frozenset(
    {
        Infraction.COLLISION_VEHICLE,
        Infraction.COLLISION_PEDESTRIAN,
        Infraction.COLLISION_STATIC,
        Infraction.RED_LIGHT,
        Infraction.STOP_SIGN,
    }
)

DEFAULT_CRITERIA = CriteriaConfig()  # frozen: one shared default


@dataclass(frozen=True)
class DrivingSettings:
    """The environment's own settings (the run config's `env` section is configs.schema.EnvConfig)."""

    town: str | None = None  # None: Town01 where its map is found, else the generated town
    traffic: str = "regular"
    route_suite: str | None = None  # None: the town's shipped suite, else random routes
    maps_dir: str | None = None
    render_bev: bool = True  # False skips the BEV (zeros), for benchmarks and headless experts
    # info["rgb_bev"] on every reset and step: the RGB image foundation models and recordings read
    # (a quarter of the BEV's cost). False leaves the key out, for workers that never read it.
    rgb_bev: bool = True
    criteria: CriteriaConfig = CriteriaConfig()
    backend: str = "sumo"  # "sumo" (embedded) or "carla" (a CARLA server; see envs/carla/world.py)
    # Where the embedded simulation runs: auto (libsumo for the first env of a process, a SUMO server
    # over TraCI for the others), libsumo or traci (envs/sumo/connection.py)
    sumo_transport: str = "auto"


class DrivingEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        town: str | None = None,
        traffic: str = "regular",
        route_suite: str | None = None,
        seed: int | None = None,
        maps_dir: str | None = None,
        render_bev: bool = True,
        render_mode: str | None = None,
        criteria: CriteriaConfig = DEFAULT_CRITERIA,
        backend: str = "sumo",
        carla=None,
        server=None,
        sumo_transport: str = "auto",
        rgb_bev: bool = True,
    ):
        """`carla` (envs.carla.world.CarlaSettings) says where the CARLA server is, and `server` is its
        supervisor (envs.carla.server.CarlaServer) when this process launched it."""
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r} is not supported; use 'rgb_array' or None")
        if backend not in ("sumo", "carla"):
            raise ValueError(f"backend {backend!r} is not known; use 'sumo' (embedded) or 'carla' (a CARLA server)")
        town = town or ("Town01" if backend == "carla" else MapSearch.from_settings(maps_dir).default_town())
        self.config = DrivingSettings(
            town=town,
            traffic=traffic,
            route_suite=route_suite,
            maps_dir=maps_dir,
            render_bev=render_bev,
            criteria=criteria,
            backend=backend,
            sumo_transport=sumo_transport,
            rgb_bev=rgb_bev,
        )
        self.render_mode = render_mode
        self.observation_space = observation_space()
        self.action_space = action_space()
        self._suite = self._resolve_suite(town, route_suite)
        # OpenCV's thread pool only adds hand-off overhead on images this small, and competes with the
        # other environments and the learner.
        cv2.setNumThreads(1)
        self.sim = _simulation(self.config, carla, server)
        self._bev = BevRenderer(self.sim.static_layers)
        self._initial_seed = seed
        self._snapshot: Snapshot | None = None
        self._expert: np.ndarray | None = None  # the expert's action at the current observation, once asked
        self.episode_id = -1

    @staticmethod
    def _resolve_suite(town: str, name: str | None):
        name = name or DEFAULT_SUITE_FOR_TOWN.get(town, RANDOM_SUITE)
        if name == RANDOM_SUITE:
            return None
        suite = load_suite(name)
        if suite.town != town:
            raise ValueError(
                f"route suite {name!r} is for {suite.town}, not {town}; pick a suite of {town} "
                f"or route_suite='{RANDOM_SUITE}'"
            )
        return suite

    # ----- gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self._initial_seed is not None and self.episode_id < 0:
            seed = self._initial_seed
        super().reset(seed=seed)
        options = options or {}
        spec, self.route_index = self._pick_route(options.get("route"))
        sim_seed = int(self.np_random.integers(2**31 - 1))
        self.route, snap = self.sim.reset(sim_seed, spec)
        self.episode_id += 1
        self._tracker = RouteTracker(self.route)
        self._criteria = Criteria(self.route.length, self.config.criteria)
        self._metrics = EpisodeMetrics(route_length_m=self.route.length, dt=self.sim.settings.dt)
        self._last_steer = 0.0
        self._episode_over = False
        director = getattr(self.sim, "scenario_director", None)  # the SUMO backend plays scenarios
        self._scenario = ScenarioTracker(director) if director is not None else None
        self._bev.reset()
        progress = self._tracker.update(snap.ego.x, snap.ego.y, snap.ego.yaw)
        obs, rgb = self._observe(snap, progress.index)
        info = {
            **rgb,
            "command": int(progress.command),
            "speed": snap.ego.speed,
            "forward": _carla_forward(snap.ego.yaw),
            "route": self.route_index,
            "route_length": self.route.length,
            "infractions": [],
            "lateral": progress.lateral,
            "heading_error": progress.heading_error,
        }
        return obs, info

    def step(self, action):
        if self._snapshot is None:
            raise RuntimeError("step() before reset(): call env.reset() first")
        if self._episode_over:
            raise RuntimeError("step() after the episode ended (terminated or truncated): call env.reset()")
        control = Control.from_action(_validated_action(action))
        snap = self.sim.step(control)
        progress = self._tracker.update(snap.ego.x, snap.ego.y, snap.ego.yaw)
        verdict = self._criteria.check(snap, progress)
        terms = roach_reward(
            snap,
            progress,
            self._last_steer,
            verdict.terminated,
            severe_failure=bool(_SEVERE.intersection(verdict.infractions)),
            stop_sign_pending=snap.stop_sign_pending,
        )
        self._last_steer = control.steer
        self._metrics.step(
            speed=snap.ego.speed,
            accel=snap.ego.accel,
            distance_travelled=snap.travelled,
            off_lane=verdict.off_lane,
            infractions=verdict.infractions,
            reward=terms.total,
        )
        self._metrics.set_route_completion(1.0 if verdict.route_completed else progress.completion)
        obs, rgb = self._observe(snap, progress.index)
        info = {
            **rgb,
            "command": int(progress.command),
            "speed": snap.ego.speed,
            "forward": _carla_forward(snap.ego.yaw),
            "infractions": [str(i) for i in verdict.infractions],
            "lane_invasions": list(snap.lane_invasions),
            "route_completion": progress.completion,
            # signed m from the route's centreline (left +) and rad against its direction
            "lateral": progress.lateral,
            "heading_error": progress.heading_error,
            "reward_terms": terms.__dict__ | {"total": terms.total},
        }
        if self._scenario is not None:
            info["scenario"] = self._scenario.step(snap.ego)
        if verdict.terminated or verdict.truncated:
            self._episode_over = True
            info["episode_metrics"] = self._metrics.result()
            if self._scenario is not None:
                info["episode_metrics"].update(self._scenario.result(info["episode_metrics"]))
        return obs, float(terms.total), bool(verdict.terminated), bool(verdict.truncated), info

    def render(self):
        if self.render_mode == "rgb_array":
            return self._last_rgb
        return None

    def close(self):
        self.sim.close()

    # ----- helpers -------------------------------------------------------------------------------
    @property
    def suite(self):
        """The route suite episodes are drawn from (None: random routes)."""
        return self._suite

    def _pick_route(self, index):
        """The route of options["route"]: an index into the suite, or a RouteSpec to drive as given."""
        if isinstance(index, RouteSpec):
            return index, -1
        if self._suite is None:
            return random_route(self.sim.network, self.np_random), -1
        if index is None:
            index = int(self.np_random.integers(len(self._suite)))
        if not 0 <= int(index) < len(self._suite):
            raise ValueError(
                f"route {index} is out of range: suite {self._suite.name!r} has routes 0..{len(self._suite) - 1}"
            )
        return self._suite.routes[int(index)], int(index)

    def _observe(self, snap: Snapshot, route_index: int) -> tuple[dict, dict]:
        """The observation, and {"rgb_bev": image} or {} (config.rgb_bev off and no rgb_array render mode)."""
        self._snapshot = snap
        self._route_position = route_index
        self._expert = None
        with_rgb = self.config.rgb_bev or self.render_mode == "rgb_array"
        if self.config.render_bev:
            self._bev.push(snap)
            bev, rgb = self._bev.render(snap, self.route, route_index, with_rgb=with_rgb)
        else:
            bev, rgb = np.zeros(BEV_SHAPE, np.uint8), np.zeros(RGB_BEV_SHAPE, np.uint8) if with_rgb else None
        self._last_rgb = rgb
        return {"bev": bev, "state": state_vector(snap)}, ({"rgb_bev": rgb} if self.config.rgb_bev else {})

    def ground_truth(self) -> tuple[Snapshot, Route, int]:
        """Privileged state for the expert driver: (snapshot, route, index of the ego on the route)."""
        return self._snapshot, self.route, self._route_position

    def expert_action(self) -> np.ndarray:
        """The privileged expert's action at the current observation, computed once per step however
        many ask (a collection's acting expert and the worker's label); read-only."""
        if self._expert is None:
            self._expert = expert_action(*self.ground_truth())
            self._expert.flags.writeable = False
        return self._expert

    @property
    def metrics(self) -> EpisodeMetrics:
        return self._metrics


def _simulation(settings: DrivingSettings, carla, server):
    if settings.backend == "carla":
        from envs.carla.world import CarlaSettings, CarlaSimulation  # the carla wheel only where it is used

        carla = dataclasses.replace(carla or CarlaSettings(), town=settings.town, traffic=settings.traffic)
        return CarlaSimulation(carla, server=server)
    return SumoSimulation(
        SumoSettings(
            town=settings.town, traffic=settings.traffic, maps_dir=settings.maps_dir, transport=settings.sumo_transport
        )
    )


def _validated_action(action) -> np.ndarray:
    a = np.asarray(action, dtype=np.float32)
    if a.shape != (2,):
        raise ValueError(f"action must have shape (2,) = [acc, steer], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action contains NaN or infinity: {a.tolist()}; actions are [acc, steer] in [-1, 1]")
    return np.clip(a, -1.0, 1.0)


def _carla_forward(yaw: float) -> tuple[float, float]:
    """The ego's unit forward vector in CARLA's left-handed world frame (what the VLM was tuned on)."""
    return float(np.cos(yaw)), float(-np.sin(yaw))
