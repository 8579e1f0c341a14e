"""Experiment trackers a RunLog mirrors its scalars and episodes into (run.trackers).

TensorBoard is the default and lives in runner/run_dir.py. Weights & Biases is an optional extra
(`pip install -e ".[wandb]"`): the run is offline unless WANDB_MODE says otherwise, so it needs no
login and no network; its files go to RUN_DIR/wandb (W&B's own service log included) and
`wandb sync RUN_DIR/wandb/offline-run-*` uploads them when wanted. Every scalar is logged against
`global_step`, the step TensorBoard gets (env steps; updates in run.mode offline).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

TENSORBOARD, WANDB = "tensorboard", "wandb"
TRACKERS = (TENSORBOARD, WANDB)
DEFAULT_TRACKERS = (TENSORBOARD,)
STEP_METRIC = "global_step"
WANDB_DIR = "wandb"
WANDB_INSTALL_HINT = 'pip install "wandb==0.31.0" (or pip install -e ".[wandb]")'
WANDB_PROJECT = "mentor"  # WANDB_PROJECT overrides it


class TrackerError(RuntimeError):
    """A tracker named in run.trackers cannot be used; the message says why and what to do."""


def check_trackers(trackers: Sequence[str]) -> tuple[str, ...]:
    """`trackers` as a tuple, or TrackerError naming an unknown one or a missing package (at start, not
    at the first scalar)."""
    unknown = [name for name in trackers if name not in TRACKERS]
    if unknown:
        raise TrackerError(f"run.trackers = {list(trackers)}: {unknown} unknown; use any of {', '.join(TRACKERS)}")
    if WANDB in trackers:
        try:
            import wandb  # noqa: F401
        except ImportError as err:
            raise TrackerError(
                f"run.trackers includes wandb, but wandb cannot be imported ({err}): "
                f"{WANDB_INSTALL_HINT}; or drop it (run.trackers=[tensorboard])"
            ) from err
    return tuple(trackers)


def _resolved_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        logger.warning("%s cannot be read (%s): the default trackers are used", path, err)
        return {}
    return data if isinstance(data, dict) else {}


class WandbTracker:
    """A W&B run that gets the RunLog's scalars and episodes, each logged with its `global_step`."""

    def __init__(self, run_dir: Path, mode: str | None = None):
        import wandb

        self.dir = Path(run_dir) / WANDB_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.mode = mode or os.environ.get("WANDB_MODE") or "offline"
        settings = wandb.Settings(
            silent=True,
            console="off",
            x_disable_stats=True,
            x_disable_machine_info=True,
            disable_git=True,
            save_code=False,
        )
        try:
            with _cache_dir(self.dir / "cache"):  # the W&B service's own log, otherwise in ~/.cache/wandb
                self.run = wandb.init(
                    project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT),
                    name=run_dir.name,
                    group=run_dir.name,
                    dir=str(run_dir),
                    mode=self.mode,
                    config=_resolved_config(run_dir),
                    reinit="create_new",
                    settings=settings,
                )
        except Exception as err:  # wandb raises its own kinds (UsageError, CommError, ...)
            raise TrackerError(
                f"wandb.init failed in {self.dir} (mode {self.mode}): {err}. TensorBoard and "
                "progress.jsonl do not need it: drop wandb from run.trackers to go on without"
            ) from err
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("*", step_metric=STEP_METRIC)
        logger.info(
            "W&B run %s (%s) in %s%s",
            self.run.id,
            self.mode,
            self.dir,
            "; upload it with `wandb sync " + str(self.dir) + "/offline-run-*`" if self.mode == "offline" else "",
        )

    def scalars(self, values: Mapping[str, Any], step: int) -> None:
        self.run.log({**values, STEP_METRIC: step})

    def close(self) -> None:
        self.run.finish()


@contextlib.contextmanager
def _cache_dir(path: Path) -> Iterator[None]:
    """WANDB_CACHE_DIR set to `path` while a W&B run starts (unless the user set it)."""
    if os.environ.get("WANDB_CACHE_DIR"):
        yield
        return
    os.environ["WANDB_CACHE_DIR"] = str(path)
    try:
        yield
    finally:
        os.environ.pop("WANDB_CACHE_DIR", None)
