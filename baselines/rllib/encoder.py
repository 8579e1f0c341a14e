"""The encoder RLlib's PPO and SAC get on Mentor's observation: Mentor's own conv encoder.

RLlib 2.60's default catalogs (PPOCatalog and SACCatalog through Catalog._get_encoder_config)
build an encoder only for a flat Box (MLP) or a channels-last image Box (CNN, float input: the
first conv takes the raw tensor, so a uint8 image fails); the driving env's
{"bev": uint8 [15, 96, 96], "state": float32 [10]} Dict fails there with "No default encoder config
for obs space=Dict(...)". Flattening it (RLlib's FlattenObservations connector) would give a
138,250-wide MLP input. So the catalogs of baselines/rllib/ppo.py and baselines/rllib/sac.py take
`BevStateCatalog` first in their bases, and a Dict {"bev", "state"} space gets `BevStateEncoder`:
the conv stack and the trunk of Mentor's own agents (learners/networks.py, the preset of
model_config["bev_encoder"], "small" by default: 96 -> 23 -> 11 -> 5 with 16/32/32 channels, then
Linear -> LayerNorm -> Tanh to 50 features), with the state vector appended: a 60-wide latent on
which RLlib builds its own heads (head_fcnet_hiddens [256, 256] then matches Mentor's heads). The
masks stay uint8 in the env, the episodes and the replay (138 KB a step) and are
scaled in the encoder, as Mentor's learner does. SAC's Q networks encode [obs, action] with
RLlib's MultiStreamEncoder, whose observation stream is this same encoder (one copy per network).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT, Encoder
from ray.rllib.core.models.configs import ModelConfig
from ray.rllib.core.models.torch.base import TorchModel

from envs.spaces import BEV_SHAPE, STATE_SIZE
from learners.networks import PRESETS, trunk
from learners.networks import Encoder as BevConvEncoder

BEV_ENCODER_KEY = "bev_encoder"  # model_config key: a preset of learners/networks.py PRESETS
DEFAULT_PRESET = "small"


def is_driving_space(space: gym.Space) -> bool:
    """The driving env's Dict {"bev": [15, 96, 96], "state": [10]} (any dtype)."""
    return (
        isinstance(space, gym.spaces.Dict)
        and set(space.spaces) == {"bev", "state"}
        and space["bev"].shape == BEV_SHAPE
        and space["state"].shape == (STATE_SIZE,)
    )


@dataclass
class BevStateEncoderConfig(ModelConfig):
    """Mentor's conv encoder + trunk on the BEV masks, with the state vector appended."""

    preset: str = DEFAULT_PRESET

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(
                f"model_config {BEV_ENCODER_KEY} = {self.preset!r} is not a Mentor encoder preset; "
                f"use one of {', '.join(PRESETS)} (learners/networks.py)"
            )

    @property
    def output_dims(self) -> tuple[int]:
        return (PRESETS[self.preset].feature_dim + STATE_SIZE,)

    def build(self, framework: str = "torch") -> BevStateEncoder:
        if framework != "torch":
            raise ValueError(f"BevStateEncoder is PyTorch only (asked for {framework!r})")
        return BevStateEncoder(self)


class BevStateEncoder(TorchModel, Encoder):
    """{OBS: {"bev": [B, 15, 96, 96] uint8 or float in [0, 255], "state": [B, 10]}} -> [B, feature + 10]."""

    def __init__(self, config: BevStateEncoderConfig):
        TorchModel.__init__(self, config)
        Encoder.__init__(self, config)
        self.conv = BevConvEncoder(config.preset)
        self.trunk = trunk(self.conv.repr_dim, PRESETS[config.preset].feature_dim)

    def _forward(self, inputs: dict, **kwargs) -> dict:
        obs = inputs[Columns.OBS]
        state = obs["state"].float()
        return {ENCODER_OUT: torch.cat([self.trunk(self.conv(obs["bev"])), state], dim=-1)}


class BevStateCatalog:
    """A catalog mixin (first base, before PPOCatalog or SACCatalog): the driving env's Dict gets
    BevStateEncoder; any other space RLlib's default encoder."""

    @classmethod
    def _get_encoder_config(
        cls, observation_space: gym.Space, model_config_dict: dict, action_space: gym.Space = None
    ) -> ModelConfig:
        if is_driving_space(observation_space):
            return BevStateEncoderConfig(preset=model_config_dict.get(BEV_ENCODER_KEY) or DEFAULT_PRESET)
        return super()._get_encoder_config(
            observation_space=observation_space, model_config_dict=model_config_dict, action_space=action_space
        )
