"""How the acting roles are put together: one place for every runtime (local, Ray, and next the
offline and dataset-collection ones). A runtime only says where rows go (`ship`), where weights and
the clock come from (`sync`), how feedback items travel (`send`), and which CARLA server, if any,
this process launched."""

from __future__ import annotations

import dataclasses
from typing import Callable

import gymnasium as gym

import envs
from configs.schema import Config, EnvConfig, EvalConfig
from core import Policy
from envs.maps import GENERATED_TOWN, MapSearch
from feedback.registry import build_model, model_inputs
from learners.registry import make_policy
from workers.evaluation import EvaluationWorker
from workers.feedback_client import FeedbackClient, InProcessBatcher, Send
from workers.rollout_worker import RolloutWorker, Sync
from workers.row_reward import synthesizes_reward

SEEDS_PER_STREAM = 1000  # worker seeds: run.seed + 1000 * stream id


def make_env(env: EnvConfig, server=None, rgb_bev: bool = True):
    """The configured environment; `server` is the CARLA server this process launched, if any
    (the CARLA world then takes its ports from it). `rgb_bev`: whether info carries the RGB BEV."""
    backend = {}
    if env.backend == "carla":
        from envs.carla.world import CarlaSettings

        c = env.carla
        backend = {
            "backend": "carla",
            "server": server,
            "carla": CarlaSettings(
                host=c.host, port=c.port, tm_port=c.tm_port, timeout_s=c.client_timeout_s, rendering=not c.nullrhi
            ),
        }
    return gym.make(
        envs.ENV_ID,
        town=env.town,
        traffic=env.traffic,
        route_suite=env.route_suite,
        maps_dir=env.maps_dir,
        rgb_bev=rgb_bev,
        **backend,
    )


def eval_env_config(config: Config) -> EnvConfig:
    """Town02's NoCrash evaluation suite where maps exist, else the generated town's suite."""
    ev: EvalConfig = config.eval
    has_town02 = (
        config.env.backend == "carla" or "Town02" in MapSearch.from_settings(config.env.maps_dir).available_towns()
    )
    town = ev.town or ("Town02" if has_town02 else GENERATED_TOWN)
    suite = ev.route_suite or ("nocrash_eval" if town == "Town02" else None)
    return dataclasses.replace(config.env, town=town, traffic=ev.traffic, route_suite=suite)


def worker_seed(config: Config, stream_id: int) -> int:
    return config.run.seed + SEEDS_PER_STREAM * stream_id


def build_rollout_worker(
    config: Config,
    stream_id: int,
    *,
    ship,
    sync: Sync,
    send: Send | None,
    server=None,
    policy_for: Callable[[gym.Env, int], Policy] | None = None,
    extra_fields=None,
) -> RolloutWorker:
    """A worker on its own stream: the environment, a Policy (of the configured algorithm, or what
    `policy_for(env, seed)` builds: a collection's acting policy), and a feedback client on `send`
    (None, or feedback.mode off: no feedback)."""
    seed = worker_seed(config, stream_id)
    feedback = None
    if send is not None and config.feedback.mode != "off":
        feedback = FeedbackClient(send, config.feedback.mode, timeout_s=config.feedback.deadline_s)
    env = make_env(config.env, server, rgb_bev=worker_reads_rgb_bev(config, extra_fields))
    policy = policy_for(env, seed) if policy_for is not None else make_policy(config.agent, seed)
    return RolloutWorker(
        config, stream_id, env, policy, feedback, ship, sync, model_inputs(config.feedback), seed, extra_fields
    )


def worker_reads_rgb_bev(config: Config, extra_fields=None) -> bool:
    """Whether a rollout worker reads info["rgb_bev"]: image feedback models, DriveVLM-RL's frame
    window (workers/row_reward.py) and a collection's rgb_bev column. Else its env skips the image."""
    return "image" in model_inputs(config.feedback) or synthesizes_reward(config) or "rgb_bev" in (extra_fields or {})


def build_evaluator(config: Config, server=None) -> EvaluationWorker:
    ev = config.eval
    return EvaluationWorker(
        make_env(eval_env_config(config), server, rgb_bev=False),
        make_policy(config.agent, config.run.seed),
        ev.routes,
        ev.max_steps,
        seed=config.run.seed,
    )


def in_process_feedback(config: Config) -> InProcessBatcher | None:
    """The feedback model on a thread of this process (local mode); None when there is none."""
    if config.feedback.mode == "off" or config.feedback.model == "none":
        return None
    return InProcessBatcher(
        build_model(config.feedback, seed=config.run.seed),
        config.feedback.max_batch_size,
        config.feedback.batch_wait_timeout_s,
    )
