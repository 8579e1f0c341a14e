"""The configuration of an RLlib baseline run: Mentor's own sections plus an `rllib` section.

    config, settings = load_rllib_config(["configs/rllib/ppo.yaml", "configs/rllib/debug.yaml"],
                                         ["run.total_env_steps=5000", "rllib.ppo.training.lr=1e-4"])

A file holds Mentor's sections (`run`, `env`, `eval`, ...: configs/schema/, validated as train.py
validates them) and one `rllib` section:

    rllib:
      algorithm: ppo              # a key of ALGORITHMS: the file baselines/rllib/<...>.py that builds it
      device: auto                # the learner's: auto (a GPU when there is one), cpu or cuda
      num_env_runners: 0          # 0: the env runner samples in the driver process
      num_envs_per_env_runner: 1  # vectorised envs per runner
      ppo:                        # per algorithm: AlgorithmConfig methods -> their keyword arguments
        training: {lr: 0.0003, gamma: 0.99}
        rl_module: {model_config: {head_fcnet_hiddens: [256, 256]}}

Only the section named by `algorithm` is used (an overlay such as configs/rllib/debug.yaml can size
all three); its keys are RLlib's own names, applied in order as `config.<method>(**kwargs)` after
the environment, env runners, learner device and seed, so any RLlib setting is reachable without a
code change, and RLlib itself rejects a misspelt one (the error names the field). Several files merge
in order (later keys win, mappings merge); `key=value` overrides follow, `rllib.*` ones included.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from configs.loader import CONFIG_DIR, ConfigError, apply_override, load_config, merge, read_yaml, to_dict
from configs.schema import Config

# Algorithm name -> the module that builds it (its ALGORITHM object, see baselines/rllib/baseline.py).
ALGORITHMS = {
    "ppo": "baselines.rllib.ppo",
    "sac": "baselines.rllib.sac",
    "dreamerv3": "baselines.rllib.dreamerv3",
}
RLLIB_CONFIG_DIR = CONFIG_DIR / "rllib"
DEVICES = ("auto", "cpu", "cuda")
# The AlgorithmConfig methods an algorithm section may call (the ones that only set values).
CONFIG_METHODS = (
    "training",
    "rl_module",
    "env_runners",
    "learners",
    "environment",
    "reporting",
    "debugging",
    "evaluation",
    "fault_tolerance",
    "framework",
    "experimental",
)


@dataclass(frozen=True)
class RllibSettings:
    algorithm: str
    device: str = "auto"
    num_env_runners: int = 0
    num_envs_per_env_runner: int = 1
    # The chosen algorithm's section: AlgorithmConfig method name -> keyword arguments, in order.
    calls: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_yaml_dict(self) -> dict:
        return {
            "algorithm": self.algorithm,
            "device": self.device,
            "num_env_runners": self.num_env_runners,
            "num_envs_per_env_runner": self.num_envs_per_env_runner,
            self.algorithm: json.loads(json.dumps(self.calls)),
        }


def algorithm_config_file(algorithm: str) -> Path:
    """configs/rllib/<algorithm>.yaml, the shipped settings of one algorithm."""
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown RLlib algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    return RLLIB_CONFIG_DIR / f"{algorithm}.yaml"


def load_rllib_config(
    paths: str | Path | list | tuple, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Config, RllibSettings]:
    """Mentor's Config and the RllibSettings of YAML files merged in order, then `key=value` overrides."""
    data: dict = {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        data = merge(data, read_yaml(Path(path)))
    rllib_overrides = [o for o in overrides if o.strip().startswith("rllib.")]
    for override in rllib_overrides:
        apply_override(data, override)
    rllib = data.pop("rllib", None)
    mentor_overrides = _as_overrides(data) + [o for o in overrides if o not in rllib_overrides]
    return load_config(None, mentor_overrides), _settings(rllib)


def save_rllib_config(config: Config, settings: RllibSettings, path: str | Path) -> None:
    """The resolved config (every Mentor field, and the rllib section the run used) as YAML that
    load_rllib_config reads back."""

    def plain(value):
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    resolved = plain(to_dict(config)) | {"rllib": settings.to_yaml_dict()}
    Path(path).write_text(yaml.safe_dump(resolved, sort_keys=False))


# ------------------------------------------------------------------------------------------ helpers


def _as_overrides(data: dict, prefix: str = "") -> list[str]:
    """Mentor's sections as `path=value` overrides for configs.loader.load_config, which validates
    each field and names it in its errors (JSON is YAML: every value reads back as it was)."""
    out = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _as_overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")
    return out


def _settings(rllib: Any) -> RllibSettings:
    if not isinstance(rllib, dict):
        raise ConfigError(
            "the config has no `rllib` section: give an RLlib config, e.g. --config "
            f"{RLLIB_CONFIG_DIR / 'ppo.yaml'} (it names rllib.algorithm)"
        )
    algorithm = rllib.get("algorithm")
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"rllib.algorithm = {algorithm!r} is invalid: must be one of {', '.join(ALGORITHMS)}")
    fields = {f.name for f in dataclasses.fields(RllibSettings)} - {"calls"}
    unknown = set(rllib) - fields - set(ALGORITHMS)
    if unknown:
        raise ConfigError(
            f"unknown field rllib.{min(unknown)}; the rllib section has: "
            f"{', '.join(sorted(fields))} and one section per algorithm ({', '.join(ALGORITHMS)})"
        )
    for name in ALGORITHMS:
        _check_calls(rllib.get(name) or {}, f"rllib.{name}")
    settings = RllibSettings(
        algorithm=algorithm,
        device=rllib.get("device", "auto"),
        num_env_runners=rllib.get("num_env_runners", 0),
        num_envs_per_env_runner=rllib.get("num_envs_per_env_runner", 1),
        calls=rllib.get(algorithm) or {},
    )
    if settings.device not in DEVICES:
        raise ConfigError(f"rllib.device = {settings.device!r} is invalid: must be one of {', '.join(DEVICES)}")
    for name, low in (("num_env_runners", 0), ("num_envs_per_env_runner", 1)):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"rllib.{name} = {value!r} is invalid: must be an integer >= {low}")
    return settings


def _check_calls(section: Any, path: str) -> None:
    if not isinstance(section, dict):
        raise ConfigError(
            f"{path} must be a mapping of AlgorithmConfig methods to their keyword arguments, "
            f"e.g. {{training: {{lr: 0.0003}}}}; got {section!r}"
        )
    for method, kwargs in section.items():
        if method not in CONFIG_METHODS:
            raise ConfigError(
                f"{path}.{method}: not an AlgorithmConfig method this section may call; use {', '.join(CONFIG_METHODS)}"
            )
        if not isinstance(kwargs, dict):
            raise ConfigError(
                f"{path}.{method} must be a mapping of keyword arguments of AlgorithmConfig.{method}(), got {kwargs!r}"
            )
