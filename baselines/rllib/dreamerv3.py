"""RLlib's own DreamerV3 (PyTorch, new API stack) as a baseline on Mentor's driving environment:
the DreamerV3 file of the RLlib baselines (baselines/rllib/baseline.py; settings
configs/rllib/dreamerv3.yaml).

    python -m baselines.rllib.train --algo dreamerv3 [key=value ...]   # train on Town01, evaluate on Town02

The baseline drives exactly the env Mentor's agents drive (workers.assembly.make_env on the run
config's `env` section: town, traffic, route suite, backend), seen through one observation change,
because RLlib's DreamerV3 takes only:

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

RLlib 2.60 does not honour DreamerV3's training_ratio by itself (see `fragment_length`): the
fragment of env steps sampled per training_step is derived from it here.

Only cluster/ imports Ray; RLlib is imported on first use so that the observation wrapper alone
stays cheap to import.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from baselines.rllib.baseline import RllibAlgorithm, load_module, rl_module_path
from envs.bev import CH_LIGHTS, CH_ROAD, CH_ROUTE, CH_VEHICLES, CH_WALKERS, MASK_SIZE, NUM_CHANNELS, NUM_HISTORY

logger = logging.getLogger(__name__)

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
        raise ValueError(
            f"expected BEV masks uint8 [..., {NUM_CHANNELS}, {MASK_SIZE}, {MASK_SIZE}], got {bev.dtype} {bev.shape}"
        )
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
    slow to import); checkpoints name it `baselines.rllib.dreamerv3.BevDreamerV3Module`, which the
    module-level __getattr__ below resolves when RLlib restores one."""
    if "BevDreamerV3Module" not in globals():
        globals()["BevDreamerV3Module"] = _define_module_class()
    return globals()["BevDreamerV3Module"]


def __getattr__(name: str):
    if name == "BevDreamerV3Module":
        return module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------- algorithm


def fragment_length(training_ratio: float, batch_size_B: int, batch_length_T: int, envs: int = 1) -> int:
    """Env steps each env samples per training_step so that its one update replays
    `training_ratio` per env step (`envs`: all env runners' envs together).

    training_ratio: replayed steps per env step (the paper's replay ratio; RLlib's default is 1024:
    one B x T = 16 x 64 update per env step, far too slow on a CPU). RLlib 2.60 does not honour it by
    itself: `DreamerV3.training_ratio` peeks `num_env_steps_trained_lifetime` at the top level of the
    metrics, where it never is (the learner logs it under learners/__all_modules__, and counts B rows,
    not B x T steps), so it always reads 0, every training_step samples `rollout_fragment_length`
    env steps once and then updates until B x T x updates / rollout_fragment_length >= training_ratio.
    With the default fragment of 1, that is one update per env step for any ratio <= B x T. So the
    fragment is set to B x T / training_ratio, which makes one update per fragment and the achieved
    ratio the asked one (training.json reports it as `replay_ratio`).
    """
    return max(1, round(batch_size_B * batch_length_T / (training_ratio * max(1, envs))))


class DreamerV3Algorithm(RllibAlgorithm):
    """DreamerV3 on the BEV image (BevImageObservation), its module taking uint8 images."""

    name = "dreamerv3"

    def algorithm_config(self):
        from ray.rllib.algorithms.dreamerv3 import DreamerV3Config
        from ray.rllib.algorithms.dreamerv3.dreamerv3_catalog import DreamerV3Catalog
        from ray.rllib.core.rl_module.rl_module import RLModuleSpec

        return DreamerV3Config().rl_module(
            rl_module_spec=RLModuleSpec(module_class=module_class(), catalog_class=DreamerV3Catalog)
        )

    def wrap_env(self, env: gym.Env) -> gym.Env:
        return BevImageObservation(env)

    def finalize(self, algo_config):
        envs = algo_config.num_envs_per_env_runner * max(1, algo_config.num_env_runners)
        return algo_config.env_runners(
            rollout_fragment_length=fragment_length(
                algo_config.training_ratio, algo_config.batch_size_B, algo_config.batch_length_T, envs
            )
        )

    def summary(self, result: dict, algo_config, env_steps: int) -> dict[str, Any]:
        updates = int(result.get("num_grad_updates_lifetime", 0) or 0)
        loss = result.get("learners", {}).get("default_policy", {}).get("WORLD_MODEL_L_total")
        return {
            "updates": updates,
            "replay_ratio": updates * algo_config.batch_size_B * algo_config.batch_length_T / max(env_steps, 1),
            "world_model_loss": float(loss) if loss is not None else None,
        }

    def load_policy(self, checkpoint_dir: str | Path) -> RllibDreamerPolicy:
        return RllibDreamerPolicy.from_checkpoint(checkpoint_dir)


ALGORITHM = DreamerV3Algorithm()


# ------------------------------------------------------------------------------------------- policy


def load_dreamer_module(checkpoint_dir: str | Path):
    module_class()  # defined before the checkpoint names it
    return load_module(checkpoint_dir)


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
        batch = {
            Columns.OBS: image,
            Columns.STATE_IN: carry,
            "is_first": torch.as_tensor(np.asarray(is_first), dtype=torch.float32),
        }
        with torch.no_grad():
            out = self.module.forward_exploration(batch) if explore else self.module.forward_inference(batch)
        actions = out[Columns.ACTIONS][:, 0].cpu().numpy().astype(np.float32)
        return out[Columns.STATE_OUT], np.clip(actions, -1.0, 1.0)

    def load_weights(self, weights) -> None:
        self.module.load_state_dict(weights)


__all__ = [
    "ALGORITHM",
    "IMAGE_SHAPE",
    "BevImageObservation",
    "RllibDreamerPolicy",
    "bev_image",
    "fragment_length",
    "load_dreamer_module",
    "max_pool_to",
    "module_class",
    "rl_module_path",
]
