"""RLlib's PPO (new API stack, PyTorch) on Mentor's env: RLlib's default PPO RLModule whose encoder
is Mentor's own BEV conv encoder + the state vector (baselines/rllib/encoder.py; RLlib's PPOCatalog
has no encoder for the env's Dict observation). Settings: configs/rllib/ppo.yaml."""

from __future__ import annotations

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.algorithms.ppo.ppo_catalog import PPOCatalog
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from baselines.rllib.baseline import RllibAlgorithm
from baselines.rllib.encoder import BevStateCatalog


class PPOBevCatalog(BevStateCatalog, PPOCatalog):
    """PPOCatalog with BevStateEncoder for the driving env's observation (actor and critic each
    have their own unless model_config vf_share_layers is set)."""


class PPOAlgorithm(RllibAlgorithm):
    name = "ppo"

    def algorithm_config(self) -> PPOConfig:
        return PPOConfig().rl_module(rl_module_spec=RLModuleSpec(catalog_class=PPOBevCatalog))


ALGORITHM = PPOAlgorithm()
