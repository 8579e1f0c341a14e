"""Load a Config from YAML files plus `key=value` overrides, validating every field.

Several files merge in order: `load_config(["configs/quickstart.yaml", "configs/debug.yaml"])` puts
the debug overlay's tiny budgets on top of the quickstart. Errors name the file or the field's full
path (`learner.batch_size`) and what is allowed, so a bad run stops at start rather than an hour in.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from configs.schema import MOVED, Config, cross_checks

CONFIG_DIR = Path(__file__).resolve().parent
_E_NOTATION = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(ValueError):
    """An invalid configuration value; the message has the field path and the allowed values."""


def load_config(paths: str | Path | list | tuple | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    data: dict[str, Any] = {}
    if paths is not None:
        for path in [paths] if isinstance(paths, (str, Path)) else paths:
            data = merge(data, read_yaml(Path(path), seen=()))
    for override in overrides:
        apply_override(data, override)
    config = _build(Config, data, "")
    problems = cross_checks(config)
    if problems:
        raise ConfigError("; ".join(problems))
    return config


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A YAML config, with `extends: other.yaml` (relative to it) merged underneath, recursively."""
    if not path.is_file():
        raise ConfigError(
            f"config file {path} not found; shipped configs: "
            f"{', '.join(sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob('*.yaml')))}"
        )
    if path.resolve() in seen:
        raise ConfigError(f"{path}: `extends` loops back to itself through {[str(p) for p in seen]}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends = {base!r} must be the file name of another config")
    return merge(read_yaml(path.parent / base, (*seen, path.resolve())), data)


def merge(base: dict, top: dict) -> dict:
    """`top` laid over `base`, section by section."""
    merged = dict(base)
    for key, value in top.items():
        merged[key] = (
            merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def apply_override(data: dict, override: str) -> None:
    """Sets `section.field=value` in the raw (unvalidated) mapping."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(
            f"override {override!r} must look like section.field=value, e.g. learner.batch_size=128 "
            "or rllib.ppo.training.lr=1e-4"
        )
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    node[parts[-1]] = _parse_value(raw, override)


def _parse_value(raw: str, override: str):
    """A YAML value; YAML 1.1 reads 3e-4 as a string, so numbers in e-notation are taken as floats."""
    if not raw.strip():
        return None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {override!r}: the value is not valid YAML ({err})") from err
    if isinstance(value, str) and _E_NOTATION.fullmatch(value.strip()):
        return float(value)
    return value


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        name = sorted(unknown)[0]
        moved = MOVED.get(f"{prefix}{name}")
        if moved:
            raise ConfigError(f"{prefix}{name} has moved: it is now {moved}")
        raise ConfigError(f"unknown field {prefix}{name}; {cls.__name__} has: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, raw in data.items():
        values[name] = _convert(hints[name], raw, f"{prefix}{name}")
    config = cls(**values)
    for name, f in fields.items():
        _check_field(f, getattr(config, name), f"{prefix}{name}")
    return config


def _check_field(f: dataclasses.Field, value, path: str) -> None:
    """The field's declared range (numbers) or rule (anything else); None passes where it is allowed."""
    if value is None:
        return
    if "range" in f.metadata:
        kind = "an integer" if isinstance(value, int) else "a number"
        if not f.metadata["range"].contains(value):
            raise ConfigError(
                f"{path} = {value!r} is invalid: must be {f.metadata['range'].describe(kind)} ({f.metadata['unit']})"
            )
    if "check" in f.metadata:
        predicate, allowed = f.metadata["check"]
        if not predicate(value):
            raise ConfigError(f"{path} = {value!r} is invalid: must be {allowed}")


def _convert(hint, raw, path: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, raw if raw is not None else {}, path + ".")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _convert(options[0], raw, path)
    if origin is Literal:
        if isinstance(raw, bool):  # YAML 1.1 reads a bare off/on as a boolean
            raw = {False: "off", True: "on"}[raw] if {False: "off", True: "on"}[raw] in args else raw
        if raw not in args:
            raise ConfigError(f"{path} = {raw!r} is invalid: must be one of {', '.join(map(str, args))}")
        return raw
    if origin is tuple:
        if not isinstance(raw, (list, tuple)):
            raise ConfigError(f"{path} = {raw!r} is invalid: must be a list")
        return tuple(_convert(args[0], item, f"{path}[{i}]") for i, item in enumerate(raw))
    if hint is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{path} = {raw!r} is invalid: must be true or false")
        return raw
    if hint is int:
        if isinstance(raw, float) and raw.is_integer():  # 1e6 on a command line is a whole number
            return int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{path} = {raw!r} is invalid: must be a whole number (e.g. 100000 or 1e5)")
        return raw
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ConfigError(f"{path} = {raw!r} is invalid: must be a number")
        return float(raw)
    if hint is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{path} = {raw!r} is invalid: must be a string")
        return raw
    raise ConfigError(f"{path}: unsupported type {hint}")


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config (every field, defaults included) as YAML."""

    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    Path(path).write_text(yaml.safe_dump(plain(to_dict(config)), sort_keys=False))
