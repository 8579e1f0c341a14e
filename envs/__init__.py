"""Driving environments: shared BEV/reward/criteria/metrics and simulator backends."""

import functools

import gymnasium

ENV_ID = "mentor/Driving-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="envs.driving_env:DrivingEnv", disable_env_checker=True)


def make_env(**env_kwargs) -> gymnasium.Env:
    return gymnasium.make(ENV_ID, **env_kwargs)


def make_vector_env(num_envs: int, mode: str = "async", **env_kwargs) -> gymnasium.vector.VectorEnv:
    """`num_envs` environments; env i gets seed + i.

    async: one process per environment, spawned, not forked, so that none inherits a simulation
    (the fastest on several cores); sync: all in this process, the first in libsumo and the others
    in SUMO servers over TraCI (envs/sumo/connection.py).
    """
    if mode not in ("async", "sync"):
        raise ValueError(f"vector mode {mode!r} is not known; use 'async' (a process each) or 'sync' (one process)")
    base_seed = env_kwargs.pop("seed", 0) or 0
    factories = [functools.partial(make_env, seed=base_seed + i, **env_kwargs) for i in range(num_envs)]
    if mode == "sync":
        return gymnasium.vector.SyncVectorEnv(factories)
    return gymnasium.vector.AsyncVectorEnv(factories, context="spawn")
