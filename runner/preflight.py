"""What a run needs, checked before any process starts or anything is written: the maps, the
evaluation routes, the dataset and checkpoints it starts from, the trackers, the CLIP checkpoint,
and the limits of the machine (runner/limits.py). Used by train.py and the RLlib runner."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from configs.loader import ConfigError
from runner.tracking import TrackerError, check_trackers

logger = logging.getLogger(__name__)


def new_run_dir(runs_dir: Path, name: str) -> Path:
    """runs/<name>-<time>, with -2, -3, ... when two runs start in the same second."""
    base = runs_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    return run_dir


def preflight(config) -> None:
    """Files the run will need, checked before any process starts (a replica would fail minutes later,
    an evaluation route only after the whole training run)."""
    from runner.limits import check_limits

    check_limits(config)  # fields against each other and against the machine's memory and cores
    check_maps(config)
    check_eval_routes(config)
    check_offline_inputs(config)
    try:
        check_trackers(config.run.trackers)  # wandb asked for but not installed
    except TrackerError as exc:
        raise ConfigError(str(exc)) from exc
    clip = config.feedback.clip
    if "clip" in config.feedback.model.split("+") and config.feedback.mode != "off" and clip.checkpoint:
        from feedback.clip_model import ClipUnavailableError, check_checkpoint

        try:
            check_checkpoint(clip.checkpoint)
        except ClipUnavailableError as exc:
            raise ConfigError(f"feedback.clip.checkpoint: {exc}") from exc


def check_maps(config) -> None:
    """A maps directory that was set but does not exist is a mistake, not a reason to switch towns."""
    import os

    from envs.maps import MAPS_ENV_VAR, MapSearch

    given = {"env.maps_dir": config.env.maps_dir, f"${MAPS_ENV_VAR}": os.environ.get(MAPS_ENV_VAR)}
    for name, path in given.items():
        if path and not Path(path).expanduser().is_dir():
            relative = (
                ""
                if os.path.isabs(os.path.expanduser(path))
                else (
                    f" (a relative path, read from {os.getcwd()}: a `ray job submit` job runs in a copy of its "
                    "working directory elsewhere, so give an absolute path)"
                )
            )
            raise ConfigError(
                f"{name} = {path!r} is not a directory{relative}; point it at a directory of CARLA "
                f'.xodr files (e.g. "$(realpath ../shared/maps/carla)"), or unset it to drive on the '
                "generated town"
            )
    search = MapSearch.from_settings(config.env.maps_dir)
    if config.env.town is None and config.env.backend == "sumo" and search.default_town() != "Town01":
        logger.warning(
            "no CARLA maps found (searched: %s): this run drives on the generated town; set $%s "
            "to a directory of CARLA .xodr files for Town01/Town02",
            ", ".join(map(str, search.directories)) or "nothing configured",
            MAPS_ENV_VAR,
        )


def check_offline_inputs(config) -> None:
    """The dataset and the checkpoint a run starts from: found and readable, or the field is named."""
    from dataset.parquet import DatasetError, list_shards, read_metadata
    from learners.warm_start import agent_file

    if config.data.dataset:
        try:
            read_metadata(config.data.dataset)
        except DatasetError as exc:
            raise ConfigError(f"data.dataset: {exc}") from exc
        if not list_shards(config.data.dataset):
            raise ConfigError(f"data.dataset = {config.data.dataset!r} holds no shards yet: collect into it first")
    for name, path in (("agent.init_from", config.agent.init_from), ("collect.checkpoint", config.collect.checkpoint)):
        if path:
            try:
                agent_file(path)
            except FileNotFoundError as exc:
                raise ConfigError(str(exc).replace("agent.init_from", name)) from exc


def check_eval_routes(config) -> None:
    from envs.route_suites import DEFAULT_SUITE_FOR_TOWN, RANDOM_SUITE, load_suite
    from workers.assembly import eval_env_config

    env = eval_env_config(config)
    name = env.route_suite or DEFAULT_SUITE_FOR_TOWN.get(env.town, RANDOM_SUITE)
    if name == RANDOM_SUITE:
        return
    try:
        size = len(load_suite(name))
    except ValueError as exc:
        raise ConfigError(f"eval.route_suite: {exc}") from exc
    outside = [route for route in config.eval.routes if route >= size]
    if outside:
        raise ConfigError(
            f"eval.routes = {list(config.eval.routes)}: {outside} not in the evaluation suite "
            f"{name!r}, which has routes 0-{size - 1}"
        )
