"""Local mode: the same worker, feedback model and learner in one process, no Ray.

libsumo allows one simulation per process, so local mode runs one rollout worker, and the
evaluation environment is opened only after the training environment has been closed.
"""
from __future__ import annotations

import dataclasses
import logging

import gymnasium as gym

import envs
from actors.evaluation import EvaluationWorker
from actors.feedback_client import InProcessFeedbackClient, SyncFeedbackClient
from actors.rollout_worker import RolloutWorker
from cluster.carla_server import launch_for  # plain Python: the supervisor, no Ray
from configs.schema import Config, EnvConfig, EvalConfig
from envs.maps import GENERATED_TOWN, MapSearch
from inference.registry import build_model, model_inputs
from learners.agent import Agent
from learners.learner import Learner

logger = logging.getLogger(__name__)


def make_env(env: EnvConfig, server=None):
    """The configured environment; `server` is the CARLA server this process launched, if any
    (the CARLA world then takes its ports from it)."""
    backend = {}
    if env.backend == "carla":
        from envs.carla.world import CarlaSettings

        c = env.carla
        backend = {"backend": "carla", "server": server,
                   "carla": CarlaSettings(host=c.host, port=c.port, tm_port=c.tm_port, timeout_s=c.client_timeout_s,
                                          rendering=not c.nullrhi)}
    return gym.make(envs.ENV_ID, town=env.town, traffic=env.traffic, route_suite=env.route_suite,
                    maps_dir=env.maps_dir, **backend)


def eval_env_config(config: Config) -> EnvConfig:
    """Town02's NoCrash evaluation suite where maps exist, else the generated town's suite."""
    ev: EvalConfig = config.eval
    has_town02 = config.env.backend == "carla" or "Town02" in MapSearch.from_settings(config.env.maps_dir).available_towns()
    town = ev.town or ("Town02" if has_town02 else GENERATED_TOWN)
    suite = ev.route_suite or ("nocrash_eval" if town == "Town02" else None)
    return dataclasses.replace(config.env, town=town, traffic=ev.traffic, route_suite=suite)


def make_feedback_client(config: Config):
    if config.feedback.mode == "off" or config.feedback.model == "none":
        return None
    model = build_model(config.feedback, seed=config.run.seed)
    if config.feedback.mode == "sync":
        return SyncFeedbackClient(model)
    return InProcessFeedbackClient(model, config.feedback.max_batch_size, config.feedback.batch_wait_timeout_s)


class LocalRuntime:
    def __init__(self, config: Config, learner: Learner | None = None):
        if config.workers.num_workers != 1:
            raise ValueError(f"workers.num_workers = {config.workers.num_workers}: local mode runs one worker "
                             "(libsumo allows one simulation per process); set workers.num_workers=1 or run on Ray")
        self.config = config
        self.learner = learner or Learner(config)
        self.server = launch_for(config.env)  # a CARLA server when env.backend is carla, else None
        self.worker = RolloutWorker(config, worker_uid=0, make_env=lambda: make_env(config.env, self.server),
                                    policy=Agent(config.agent, device="cpu", seed=config.run.seed),
                                    feedback=make_feedback_client(config), ship=self.learner.add,
                                    model_inputs=model_inputs(config.feedback), seed=config.run.seed)
        self._reported_episodes = 0

    @property
    def env_steps(self) -> int:
        return self.learner.env_steps

    def step(self, ticks: int = 64) -> dict[str, float]:
        """Collect `ticks` env steps, train as the rate limit allows, refresh the worker's policy."""
        self.worker.run(ticks)
        self.learner.train()
        latest = self.learner.policy(self.worker.policy_version)
        if latest is not None:
            self.worker.set_policy(*latest)
        stats = self.worker.stats
        recent = stats.episode_returns[-10:]
        return {**self.learner.report(), **{f"feedback/{k}": v for k, v in self.worker.feedback_report().items()},
                "backpressure_waits": float(stats.backpressure_waits),
                **({"episode_return": sum(r[0] for r in recent) / len(recent)} if recent else {})}

    def new_episodes(self) -> list[tuple[float, float, float]]:
        rows = self.worker.stats.episode_returns[self._reported_episodes:]
        self._reported_episodes += len(rows)
        return rows

    def save(self, directory) -> None:
        self.learner.save(directory)

    def load(self, directory) -> None:
        self.learner.load(directory)
        latest = self.learner.policy(-1)
        self.worker.set_policy(*latest)

    def evaluate(self) -> dict[str, dict[str, float]]:
        self.worker.flush()
        self.worker.close()  # one simulation per process: free it for the evaluation env
        ev = self.config.eval
        policy = Agent(self.config.agent, device="cpu", seed=self.config.run.seed)
        evaluator = EvaluationWorker(lambda: make_env(eval_env_config(self.config), self.server), policy,
                                     ev.routes, ev.max_steps, seed=self.config.run.seed)
        try:
            self.learner.publish()  # evaluate the very latest weights
            evaluator.set_policy(*self.learner.policy(-1))
            return evaluator.evaluate()
        finally:
            evaluator.close()

    def shutdown(self) -> None:
        try:
            self.worker.close()
        except Exception:  # already closed by evaluate()
            logger.debug("worker close", exc_info=True)
        if self.server is not None:
            self.server.stop()
