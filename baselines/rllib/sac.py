"""RLlib's SAC (new API stack, PyTorch) on Mentor's env: RLlib's default SAC RLModule whose encoders
(the policy's, and the observation stream of each Q network's [obs, action] MultiStreamEncoder) are
Mentor's own BEV conv encoder + the state vector (baselines/rllib/encoder.py; RLlib's SACCatalog has
no encoder for the env's Dict observation). Settings: configs/rllib/sac.yaml."""

from __future__ import annotations

from ray.rllib.algorithms.sac import SACConfig
from ray.rllib.algorithms.sac.sac_catalog import SACCatalog
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from baselines.rllib.baseline import RllibAlgorithm
from baselines.rllib.encoder import BevStateCatalog


class SACBevCatalog(BevStateCatalog, SACCatalog):
    """SACCatalog with BevStateEncoder for the driving env's observation."""


class SACAlgorithm(RllibAlgorithm):
    name = "sac"

    def algorithm_config(self) -> SACConfig:
        return SACConfig().rl_module(rl_module_spec=RLModuleSpec(catalog_class=SACBevCatalog))


ALGORITHM = SACAlgorithm()
