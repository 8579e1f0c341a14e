"""The `run` section: the run's name, mode, budgets, clocks and trackers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from configs.schema.fields import check, num


@dataclass(frozen=True)
class RunConfig:
    name: str = "quickstart"
    # ray: a cluster (started if none); local: one process, no Ray; offline: the learner on
    # data.dataset alone (ends at run.total_updates), no environment until the evaluation
    mode: Literal["ray", "local", "offline"] = "ray"
    total_env_steps: int = num(20_000, 0, unit="env steps")  # the run ends here (0: no env-step budget)
    total_updates: int = num(0, 0, unit="updates")  # ... or here (0: no update budget)
    seed: int = num(0, 0, unit="1")
    runs_dir: str = "runs"
    progress_every_s: float = num(5.0, 0, unit="s", low_open=True)
    ray_address: str | None = None  # None: join a running cluster (ray job submit) or start one
    # How long the roles may wait for the cluster to hold them (an autoscaler adding nodes) before the
    # run stops saying what is missing.
    placement_timeout_s: float = num(120.0, 0, unit="s")
    shutdown_ray: bool = True  # disconnect from Ray at the end (tests that share a cluster say no)
    time_limit_s: float = num(0.0, 0, unit="s")  # stop after this long (0: no limit)
    checkpoint_every_s: float = num(300.0, 0, unit="s")  # also checkpoint on this wall-clock interval (0: never)
    # Where the run's scalars and episodes go besides progress.jsonl and episodes.csv (runner/tracking.py):
    # tensorboard (RUN_DIR/tb) and/or wandb (Weights & Biases, an optional extra: offline in RUN_DIR/wandb, no
    # login or network; `wandb sync` uploads it later, WANDB_MODE=online logs live). Names, no unit; [] for neither.
    trackers: tuple[str, ...] = check(
        ("tensorboard",),
        lambda v: len(set(v)) == len(v) and set(v) <= {"tensorboard", "wandb"},
        "a list of distinct names from: tensorboard, wandb",
    )
