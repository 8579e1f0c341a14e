"""Driving environments: shared BEV/reward/criteria/metrics and simulator backends."""
import functools

import gymnasium

ENV_ID = "mentor/Driving-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="envs.driving_env:DrivingEnv", disable_env_checker=True)


def make_env(**env_kwargs) -> gymnasium.Env:
    return gymnasium.make(ENV_ID, **env_kwargs)


def make_vector_env(num_envs: int, **env_kwargs) -> gymnasium.vector.AsyncVectorEnv:
    """One process per environment (libsumo runs one simulation per process); env i gets seed + i.

    Workers are spawned, not forked, so none inherits a simulation from the parent process.
    """
    base_seed = env_kwargs.pop("seed", 0) or 0
    factories = [functools.partial(make_env, seed=base_seed + i, **env_kwargs) for i in range(num_envs)]
    return gymnasium.vector.AsyncVectorEnv(factories, context="spawn")
