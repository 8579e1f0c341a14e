"""The evaluation worker: drives a route suite with the current weights (no exploration) and
returns the metric table."""

from __future__ import annotations

import logging

import numpy as np
import torch

from core import Policy, PolicySnapshot
from envs.metrics import format_table, summarize
from envs.types import SimulatorError

logger = logging.getLogger(__name__)

_ATTEMPTS = 3


class EvaluationWorker:
    def __init__(self, env, policy: Policy, routes: tuple[int, ...], max_steps: int, seed: int = 0):
        self._env = env
        self._policy = policy
        self._routes = routes
        self._max_steps = max_steps
        self._seed = seed
        self.policy_version = -1
        self._steps: list[dict] = []  # the last evaluation's per-step records
        self._route_step = 0

    def set_policy(self, snapshot: PolicySnapshot) -> None:
        self._policy.load_weights(snapshot.weights)
        self.policy_version = snapshot.version

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Per-route metrics plus a "mean" row (and a row per scenario type on a scenario suite)."""
        rows, self._steps = {}, []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one observation at a time: more threads only wait on each other
        try:
            for route in self._routes:
                rows[f"route {route}"] = self._episode(route)
        finally:
            torch.set_num_threads(threads)
        by_type = self._rows_by_scenario_type(rows)
        rows["mean"] = summarize(list(rows.values()))
        rows.update(by_type)
        logger.info("evaluation with policy %d:\n%s", self.policy_version, format_table(rows))
        return rows

    def _rows_by_scenario_type(self, rows: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """One row per scenario type ("scenario <type>": the mean over its routes) on a scenario suite."""
        suite = getattr(self._env.unwrapped, "suite", None)
        groups: dict[str, list] = {}
        for route in self._routes:
            scenario = suite.routes[route].scenario if suite is not None else None
            if scenario is not None:
                groups.setdefault(f"scenario {scenario.type}", []).append(rows[f"route {route}"])
        return {name: summarize(group) for name, group in groups.items()}

    def _episode(self, route: int) -> dict[str, float]:
        """One route; driven again from its start when the simulator fails part-way (a SUMO
        crash), so that every route of the table is scored on a whole episode."""
        for attempt in range(_ATTEMPTS):
            try:
                return self._drive(route)
            except SimulatorError as exc:
                if attempt == _ATTEMPTS - 1:
                    raise
                logger.warning("route %d: simulator failed (%s); driving it again", route, exc)
        raise AssertionError("unreachable")

    def _drive(self, route: int) -> dict[str, float]:
        obs, _ = self._env.reset(seed=self._seed + route, options={"route": route})
        self._steps = [r for r in self._steps if r["route"] != route]  # a retried route: its last attempt only
        self._route_step = 0
        carry, is_first = self._policy.initial_carry(1), True
        for _ in range(self._max_steps):
            batch = {"bev": obs["bev"][None], "state": obs["state"][None]}
            carry, action = self._policy.act(carry, batch, np.array([is_first]), explore=False, step=0)
            obs, reward, terminated, truncated, info = self._env.step(action[0])
            self._record(route, action[0], reward, info)
            is_first = False
            if terminated or truncated:
                result = info["episode_metrics"]
                logger.info(
                    "route %d: RC %.3f DS %.3f, ended by %s",
                    route,
                    result["route_completion"],
                    result["driving_score"],
                    info["infractions"] or ["route completed" if result["arrived"] else "timeout"],
                )
                return result
        metrics = self._env.unwrapped.metrics.result()
        logger.info("route %d stopped after %d steps without ending", route, self._max_steps)
        return metrics

    def _record(self, route: int, action: np.ndarray, reward: float, info: dict) -> None:
        ego = self._env.unwrapped.ground_truth()[0].ego
        record = {
            "route": route,
            "step": self._route_step,
            "x": ego.x,
            "y": ego.y,
            "yaw": ego.yaw,
            "speed": ego.speed,
            "acc": float(action[0]),
            "steer": float(action[1]),
            "command": int(info["command"]),
            "route_completion": float(info["route_completion"]),
            "lateral": float(info["lateral"]),
            "reward": float(reward),
            **{f"reward/{name}": float(value) for name, value in info["reward_terms"].items()},
            "infractions": ";".join(info["infractions"]),
        }
        if "scenario" in info:
            record.update({f"scenario/{key}": value for key, value in info["scenario"].items()})
        self._steps.append(record)
        self._route_step += 1

    def step_records(self) -> list[dict]:
        """The last evaluation's steps, one record each: the route, the ego's pose, speed and action,
        the reward and its terms, the infractions that happened at that step (";"-joined) and, on a
        scenario route, the scenario's distance and time-to-collision."""
        return list(self._steps)

    def close(self) -> None:
        self._env.close()
