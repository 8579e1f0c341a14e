"""RLlib's own DreamerV3 (PyTorch, new API stack) as a baseline on Mentor's driving environment.

    from cluster.rllib_dreamer import train_dreamer, evaluate_dreamer
    summary = train_dreamer(config, env_steps=100_000, out_dir="runs/dreamer")   # online, one process
    rows = evaluate_dreamer(config, summary["checkpoint"], town="Town02", routes=(0, 1, 2))

(benchmarks/rllib_dreamer.py does both and prints JSON.) The baseline drives exactly the env Mentor's
agents drive (actors.assembly.make_env on the run config's `env` section: town, traffic, route
suite, backend), seen through one observation change, because RLlib's DreamerV3 takes only:

- a flat vector (Box of rank 1: MLP encoder, symlog'd), or
- an RGB-like image of exactly 64 x 64 x 3, channels last, as floats (Box of rank 3: its CNNAtari
  encoder and ConvTransposeAtari decoder are built for [64, 64, 3] whatever the space says).

A Dict observation fails in DreamerV3Catalog (`TypeError: object of type 'NoneType' has no len()`,
utils.do_symlog_obs takes len(space.shape)); the 15 x 96 x 96 masks fail in the first conv ("weight
of size [.., 3, 4, 4], expected input[.., 15, 98, 98] to have 3 channels, but got 15 channels
instead"); a 96 x 96 x 3 image fails after the encoder ("mat1 and mat2 shapes cannot be
multiplied"); a 64 x 64 x 1 image is built as RGB and fails like the 15 channels; a rank-2 (grey)
image fails in the catalog ("2D Box spaces are not supported"). Continuous actions are supported
(tanh'd-mean Normal actor, std in [0.1, 1]; samples can leave [-1, 1] and the env clips them).

So `BevImageObservation` turns {"bev": uint8 [15, 96, 96], "state"} into one uint8 [64, 64, 3]
image (channels below), max-pooled so that thin stop lines and small walkers survive the 1.5x
shrink. The state vector (speed, previous control, light state) is dropped: the recurrent world
model has to infer speed from successive images. The images stay uint8 in the env and in the replay
buffer (12 KiB per step, not 48 KiB as float32); `BevDreamerV3Module` scales them to [-1, 1]
(x / 128 - 1, what RLlib's own NormalizedImageEnv does for Atari) inside the RLModule, where a raw
uint8 image would otherwise stop the first conv ("expected scalar type Byte but found Float").

Only this module (cluster/) imports Ray; RLlib is imported on first use so that the observation
wrapper alone stays cheap to import.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from configs.schema import Config, EnvConfig
from envs.bev import CH_LIGHTS, CH_ROAD, CH_ROUTE, CH_VEHICLES, CH_WALKERS, MASK_SIZE, NUM_CHANNELS, NUM_HISTORY

logger = logging.getLogger(__name__)

ENV_NAME = "mentor-dreamer-v0"  # the RLlib (tune registry) name of the wrapped env
IMAGE_SIZE = 64  # RLlib's DreamerV3 CNN encoder/decoder are built for 64 x 64 x 3
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)
# The three channels of the image, from the 15 BEV masks (envs/bev.py):
#   0 "map":       road 96, route 192 (the route band lies on the road, so it wins)
#   1 "obstacles": vehicles and walkers at t 255, where they were 5 frames (0.5 s) earlier 128
#                  (a motion trail: one image shows who moves where)
#   2 "lights":    traffic-light stop lines at t (green 80, yellow 170, red 255), stop zones 255
IMAGE_CHANNELS = ("map", "obstacles", "lights")
MAP_ROAD, MAP_ROUTE, OBSTACLE_NOW, OBSTACLE_TRAIL = 96, 192, 255, 128
_NOW = NUM_HISTORY - 1  # history channels are ordered t-15, t-10, t-5, t
# Infos the replay keeps: RLlib stores every step's info dict with the episode, and the driving
# env's carry a 192 x 192 x 3 RGB image and reward terms; these scalars are all training needs.
_INFO_KEYS = ("route_completion", "infractions", "episode_metrics", "route")


# ------------------------------------------------------------------------------------ observation

def _pool_index(source: int, target: int) -> np.ndarray:
    """[k, target] source indices: output pixel i takes the max over the source pixels its window
    [i * s/t, (i + 1) * s/t) overlaps (k = the widest window; shorter ones repeat their last)."""
    start = np.floor(np.arange(target) * source / target).astype(int)
    stop = np.ceil((np.arange(target) + 1) * source / target).astype(int)  # exclusive
    width = int((stop - start).max())
    return np.minimum(start[None] + np.arange(width)[:, None], stop[None] - 1)


_ROWS = _pool_index(MASK_SIZE, IMAGE_SIZE)  # 96 -> 64: two source pixels per output pixel


def max_pool_to(masks: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """[..., H, W] -> [..., size, size] by the max over each output pixel's source window."""
    rows = _ROWS if masks.shape[-1] == MASK_SIZE and size == IMAGE_SIZE else _pool_index(masks.shape[-1], size)
    out = masks[..., rows[0], :]
    for r in rows[1:]:
        out = np.maximum(out, masks[..., r, :])
    pooled = out[..., rows[0]]
    for c in rows[1:]:
        pooled = np.maximum(pooled, out[..., c])
    return pooled


def _scaled(mask: np.ndarray, value: int) -> np.ndarray:
    return (mask.astype(np.uint16) * value // 255).astype(np.uint8)


def bev_image(bev: np.ndarray) -> np.ndarray:
    """BEV masks uint8 [..., 15, 96, 96] -> the DreamerV3 image uint8 [..., 64, 64, 3] (HWC)."""
    if bev.shape[-3:] != (NUM_CHANNELS, MASK_SIZE, MASK_SIZE) or bev.dtype != np.uint8:
        raise ValueError(f"expected BEV masks uint8 [..., {NUM_CHANNELS}, {MASK_SIZE}, {MASK_SIZE}], "
                         f"got {bev.dtype} {bev.shape}")
    road_map = np.maximum(_scaled(bev[..., CH_ROAD, :, :], MAP_ROAD), _scaled(bev[..., CH_ROUTE, :, :], MAP_ROUTE))
    before = np.maximum(bev[..., CH_VEHICLES + _NOW - 1, :, :], bev[..., CH_WALKERS + _NOW - 1, :, :])
    now = np.maximum(bev[..., CH_VEHICLES + _NOW, :, :], bev[..., CH_WALKERS + _NOW, :, :])
    obstacles = np.maximum(now, _scaled(before, OBSTACLE_TRAIL))
    lights = bev[..., CH_LIGHTS + _NOW, :, :]
    image = max_pool_to(np.stack([road_map, obstacles, lights], axis=-3))
    return np.ascontiguousarray(np.moveaxis(image, -3, -1))


class BevImageObservation(gym.ObservationWrapper):
    """The driving env's {"bev", "state"} observation as the one image RLlib's DreamerV3 takes."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Box(0, 255, IMAGE_SHAPE, dtype=np.uint8)

    def observation(self, observation):
        return bev_image(observation["bev"])


class SlimInfo(gym.Wrapper):
    """Keeps only the small info entries (see _INFO_KEYS): the replay stores every step's info."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, _slim(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, _slim(info)


def _slim(info: dict) -> dict:
    return {k: info[k] for k in _INFO_KEYS if k in info}


def make_dreamer_env(env: EnvConfig) -> gym.Env:
    """Mentor's env of this config (the same builder the rollout workers use), as DreamerV3 sees it."""
    from actors.assembly import make_env

    return BevImageObservation(SlimInfo(make_env(env)))


# ---------------------------------------------------------------------------------------- RLModule

def _normalized(batch: dict) -> dict:
    from ray.rllib.core.columns import Columns

    obs = batch[Columns.OBS]
    if obs.dtype == torch.uint8:
        batch = dict(batch)
        batch[Columns.OBS] = obs.float() / 128.0 - 1.0
    return batch


def _define_module_class():
    from ray.rllib.algorithms.dreamerv3.torch.dreamerv3_torch_rl_module import DreamerV3TorchRLModule

    class BevDreamerV3Module(DreamerV3TorchRLModule):
        """RLlib's DreamerV3 module, taking uint8 images (stored compactly) and scaling them to
        [-1, 1] before the encoder; the decoder's reconstruction target is the scaled image."""

        def _forward_inference(self, batch, **kwargs):
            return super()._forward_inference(_normalized(batch), **kwargs)

        def _forward_exploration(self, batch, **kwargs):
            return super()._forward_exploration(_normalized(batch), **kwargs)

        def _forward_train(self, batch, **kwargs):
            return super()._forward_train(_normalized(batch), **kwargs)

    BevDreamerV3Module.__module__ = __name__
    BevDreamerV3Module.__qualname__ = "BevDreamerV3Module"
    return BevDreamerV3Module


def module_class():
    """BevDreamerV3Module. It subclasses RLlib's module, so it is defined on first use (RLlib is
    slow to import); checkpoints name it `cluster.rllib_dreamer.BevDreamerV3Module`, which the
    module-level __getattr__ below resolves when RLlib restores one."""
    if "BevDreamerV3Module" not in globals():
        globals()["BevDreamerV3Module"] = _define_module_class()
    return globals()["BevDreamerV3Module"]


def __getattr__(name: str):
    if name == "BevDreamerV3Module":
        return module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _driving_callbacks(sink: list | None = None):
    """An RLlibCallback class logging Mentor's episode metrics (the env's own, from the last info:
    RLlib's episode objects here are chunks, whose get_return() misses the earlier chunks) to
    RLlib's metrics and, when given, appending them to `sink` (the env runner is in this process)."""
    from ray.rllib.callbacks.callbacks import RLlibCallback

    class DrivingMetrics(RLlibCallback):
        def on_episode_end(self, *, episode, metrics_logger=None, **kwargs):
            infos = episode.get_infos(-1) if len(episode) else {}
            result = infos.get("episode_metrics") if isinstance(infos, dict) else None
            if not result:
                return
            row = {"episode_return": float(result["return"]), "route_completion": float(result["route_completion"]),
                   "driving_score": float(result["driving_score"])}
            if metrics_logger is not None:
                for key, value in row.items():
                    metrics_logger.log_value(f"mentor_{key}", value, reduce="mean", window=100)
            if sink is not None:
                sink.append(row)

    return DrivingMetrics


# ------------------------------------------------------------------------------------------ training

def dreamer_config(config: Config, model_size: str = "XS", training_ratio: float = 64, *,
                   batch_size_B: int = 16, batch_length_T: int = 64, horizon_H: int = 15,
                   replay_capacity: int = 1_000_000, device: str = "auto"):
    """RLlib's DreamerV3Config on Mentor's env of `config` (run.seed seeds it).

    training_ratio: replayed steps per env step (the paper's replay ratio; RLlib's default is
    1024: one B x T = 16 x 64 update per env step, far too slow on a CPU). RLlib 2.60 does not
    honour it by itself: `DreamerV3.training_ratio` peeks `num_env_steps_trained_lifetime` at the
    top level of the metrics, where it never is (the learner logs it under
    learners/__all_modules__, and counts B rows, not B x T steps), so it always reads 0, every
    training_step samples `rollout_fragment_length` env steps once and then updates until
    B x T x updates / rollout_fragment_length >= training_ratio. With the default fragment of 1,
    that is one update per env step for any ratio <= B x T. So the fragment is set here to
    B x T / training_ratio, which makes one update per fragment and the achieved ratio the asked
    one (train_dreamer reports it as `replay_ratio`).

    One env runner and the learner live in the calling process (DreamerV3 alternates sampling and
    learning anyway); device "auto" puts the learner on a GPU when there is one.
    """
    from ray.rllib.algorithms.dreamerv3 import DreamerV3Config
    from ray.rllib.algorithms.dreamerv3.dreamerv3_catalog import DreamerV3Catalog
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    env_config = config.env
    register_env(ENV_NAME, lambda _ctx: make_dreamer_env(env_config))
    gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return (
        DreamerV3Config()
        .environment(ENV_NAME)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1,
                     rollout_fragment_length=fragment_length(training_ratio, batch_size_B, batch_length_T))
        .learners(num_learners=0, num_gpus_per_learner=1 if gpu else 0)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=module_class(), catalog_class=DreamerV3Catalog))
        .training(model_size=model_size, training_ratio=training_ratio, batch_size_B=batch_size_B,
                  batch_length_T=batch_length_T, horizon_H=horizon_H,
                  replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": int(replay_capacity)})
        .reporting(metrics_num_episodes_for_smoothing=100)
        .callbacks(_driving_callbacks())  # train_dreamer also collects the episodes
        .debugging(seed=config.run.seed)
    )


def fragment_length(training_ratio: float, batch_size_B: int, batch_length_T: int) -> int:
    """Env steps sampled per training_step so that its one update replays `training_ratio` per step."""
    return max(1, round(batch_size_B * batch_length_T / training_ratio))


def _get(result: dict, *path, default=None):
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return default
        result = result[key]
    return result


def train_dreamer(config: Config, env_steps: int, out_dir: str | Path, *, progress_every_s: float | None = None,
                  **dreamer_kwargs) -> dict[str, Any]:
    """Trains DreamerV3 (dreamer_config(config, **dreamer_kwargs)) until `env_steps` env steps are
    sampled, saves the RLlib Algorithm checkpoint to `out_dir` (with episodes.csv, the training
    episodes, and training.json, this summary, beside it) and returns the summary: episodes, mean
    episode return / route completion / driving score over the training episodes, env steps,
    updates, the achieved replay ratio, wall time. Starts a local Ray cluster when none is
    connected, and stops it at the end."""
    import ray

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    every_s = progress_every_s if progress_every_s is not None else config.run.progress_every_s
    episodes: list[dict[str, float]] = []
    algo = None
    started = time.monotonic()
    try:
        algo_config = dreamer_config(config, **dreamer_kwargs).callbacks(_driving_callbacks(episodes))
        algo = algo_config.build_algo()
        replayed_per_update = algo_config.batch_size_B * algo_config.batch_length_T
        built = time.monotonic()
        result: dict = {}
        sampled, stamped, last_log = 0, 0, built
        while sampled < env_steps:
            result = algo.train()
            sampled = int(_get(result, "env_runners", "num_env_steps_sampled_lifetime", default=0))
            for row in episodes[stamped:]:
                row["env_steps"] = sampled  # the clock when the episode was reported
            stamped = len(episodes)
            now = time.monotonic()
            if now - last_log >= every_s or sampled >= env_steps:
                last_log = now
                recent = _means(episodes[-20:])
                logger.info("dreamer: %d/%d env steps (%.2f/s), %d updates, %d episodes, last 20: return %s, "
                            "route completion %s; world-model loss %s", sampled, env_steps,
                            sampled / max(now - built, 1e-9), _updates(result), len(episodes),
                            _fmt(recent["episode_return"]), _fmt(recent["route_completion"]),
                            _fmt(_num(_get(result, "learners", "default_policy", "WORLD_MODEL_L_total"))))
        trained = time.monotonic()
        checkpoint = algo.save_to_path(str(out_dir))
        means = _means(episodes)
        summary = {
            "env_steps": sampled,
            "episodes": len(episodes),
            "episode_return_mean": means["episode_return"],
            "route_completion_mean": means["route_completion"],
            "driving_score_mean": means["driving_score"],
            "updates": _updates(result),
            "replay_ratio": _updates(result) * replayed_per_update / max(sampled, 1),  # achieved
            "world_model_loss": _num(_get(result, "learners", "default_policy", "WORLD_MODEL_L_total")),
            "wall_time_s": trained - started,
            "build_time_s": built - started,
            "env_steps_per_s": sampled / max(trained - built, 1e-9),
            "checkpoint": str(checkpoint),
        }
        _write_episodes(out_dir / "episodes.csv", episodes)
        (out_dir / "training.json").write_text(json.dumps(summary, indent=1))
        logger.info("dreamer: trained %d env steps in %.0f s; checkpoint %s", sampled, summary["wall_time_s"],
                    checkpoint)
        return summary
    finally:
        if algo is not None:
            algo.stop()  # closes the env: libsumo runs one simulation per process
        if started_ray:
            ray.shutdown()


def _means(rows: list[dict[str, float]]) -> dict[str, float | None]:
    keys = ("episode_return", "route_completion", "driving_score")
    return {k: float(np.mean([r[k] for r in rows])) if rows else None for k in keys}


def _write_episodes(path: Path, rows: list[dict[str, float]]) -> None:
    keys = ("env_steps", "episode_return", "route_completion", "driving_score")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _num(value) -> float | None:
    """A finite float, or None (JSON null) where RLlib reported nothing."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _updates(result: dict) -> int:
    return int(_get(result, "num_grad_updates_lifetime", default=0) or 0)


# ---------------------------------------------------------------------------------------- evaluation

def rl_module_path(checkpoint_dir: str | Path) -> Path:
    """The learner's RLModule inside an Algorithm checkpoint (or the module directory itself)."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

    path = Path(checkpoint_dir)
    nested = path / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID
    if nested.is_dir():
        return nested
    if (path / DEFAULT_MODULE_ID).is_dir():
        return path / DEFAULT_MODULE_ID
    if (path / "class_and_ctor_args.pkl").is_file() and any(path.glob("module_state*")):
        return path
    raise FileNotFoundError(f"{checkpoint_dir}: no DreamerV3 RLModule checkpoint there (expected {nested})")


def load_dreamer_module(checkpoint_dir: str | Path):
    from ray.rllib.core.rl_module.rl_module import RLModule

    module_class()  # defined before the checkpoint names it
    module = RLModule.from_checkpoint(str(rl_module_path(checkpoint_dir)))
    return module.to("cpu").eval()


class RllibDreamerPolicy:
    """A trained RLlib DreamerV3 RLModule behind Mentor's Policy protocol (core.Policy).

    The carry is DreamerV3's recurrent state {"h": [B, gru], "z": [B, categoricals, classes],
    "a": [B, 2] (the previous action)}; where is_first is set the module itself replaces it with its
    learned initial state (and a zero action), so a finished episode's carry never leaks into the
    next. Observations go through the same BEV -> image mapping as in training.
    """

    def __init__(self, module):
        self.module = module.eval()

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | Path) -> RllibDreamerPolicy:
        return cls(load_dreamer_module(checkpoint_dir))

    def initial_carry(self, batch_size: int) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            state = self.module.get_initial_state()
        return {k: v.unsqueeze(0).repeat(batch_size, *([1] * v.dim())).float() for k, v in state.items()}

    def act(self, carry, obs, is_first: np.ndarray, *, explore: bool, step: int) -> tuple[Any, np.ndarray]:
        from ray.rllib.core.columns import Columns

        image = torch.from_numpy(bev_image(np.asarray(obs["bev"])))[:, None]  # [B, T=1, 64, 64, 3]
        batch = {Columns.OBS: image, Columns.STATE_IN: carry,
                 "is_first": torch.as_tensor(np.asarray(is_first), dtype=torch.float32)}
        with torch.no_grad():
            out = self.module.forward_exploration(batch) if explore else self.module.forward_inference(batch)
        actions = out[Columns.ACTIONS][:, 0].cpu().numpy().astype(np.float32)
        return out[Columns.STATE_OUT], np.clip(actions, -1.0, 1.0)

    def load_weights(self, weights) -> None:
        self.module.load_state_dict(weights)


def evaluate_dreamer(config: Config, checkpoint_dir: str | Path, town: str | None = None,
                     routes: tuple[int, ...] | None = None, traffic: str | None = None,
                     max_steps: int | None = None) -> dict[str, dict[str, float]]:
    """Mentor's metric table (per-route rows and "mean") of a DreamerV3 checkpoint, driven without
    exploration by actors.evaluation.EvaluationWorker on the evaluation env of `config` (evaluate.py's:
    Town02 with its nocrash_eval suite where maps exist), the arguments replacing config.eval's."""
    from actors.assembly import eval_env_config, make_env
    from actors.evaluation import EvaluationWorker

    ev = config.eval
    ev = dataclasses.replace(ev, town=town or ev.town, traffic=traffic or ev.traffic,
                             routes=tuple(routes) if routes is not None else ev.routes,
                             max_steps=max_steps or ev.max_steps)
    config = dataclasses.replace(config, eval=ev)
    policy = RllibDreamerPolicy.from_checkpoint(checkpoint_dir)
    env_config = eval_env_config(config)
    logger.info("evaluating DreamerV3 %s on %s (%s traffic), routes %s", checkpoint_dir, env_config.town,
                ev.traffic, list(ev.routes))
    evaluator = EvaluationWorker(make_env(env_config), policy, ev.routes, ev.max_steps, seed=config.run.seed)
    try:
        return evaluator.evaluate()
    finally:
        evaluator.close()
