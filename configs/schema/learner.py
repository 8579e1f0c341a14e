"""The `learner`, `data`, `collect` and `eval` sections: training, the offline dataset, dataset
collection and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from configs.schema.fields import check, num

# -------------------------------------------------------------------------------------------- learner


@dataclass(frozen=True)
class LearnerConfig:
    batch_size: int = num(256, 1, unit="samples")
    # Host memory ~1.6 KB a row (the BEV LZ4-compressed: learners/bev_codec.py): 1M rows ~1.6 GB
    replay_capacity: int = num(150_000, 16, unit="rows")
    learning_starts: int = num(1024, 0, unit="env steps")  # no update before the replay holds this many
    samples_per_insert: float = num(32.0, 0, unit="samples/transition", low_open=True)  # the train ratio
    # How far (transitions) the workers may run ahead of the ratio before they wait for the learner;
    # null: never wait (the learner does what it can; the achieved ratio is reported).
    max_insert_lead: int | None = num(None, 1, unit="transitions")
    publish_every_updates: int = num(20, 1, unit="updates")  # workers see new weights this often
    checkpoint_every_updates: int = num(1000, 1, unit="updates")
    device: str = "auto"  # auto: cuda when available
    gpu_fraction: float = num(1.0, 0, 1, unit="GPU", low_open=True)  # below 1 shares the GPU with replicas
    # torch's intra-op threads in the learner's process (0: torch's default, one per core). On a
    # machine whose cores the workers also use, 1 avoids threads spinning against each other.
    torch_threads: int = num(0, 0, unit="threads")
    # Sample-time reward shaping (docs/architecture.md §6): r + clip_reward_scale * normalised CLIP margin bonus
    # (Found-RL uses 0.25) + semantic_reward_scale * (2 * safety - 1) (VLM-RL-style language goals).
    clip_reward_scale: float = num(0.0, 0, unit="reward/bonus")
    semantic_reward_scale: float = num(0.0, 0, unit="reward")


@dataclass(frozen=True)
class DataConfig:
    """A transition dataset (dataset/parquet.py) the learner learns from: all of each batch in
    run.mode offline; `offline_fraction` of it in an online run once online rows can be sampled."""

    dataset: str | None = None  # a dataset directory written by collect.py
    offline_fraction: float = num(0.5, 0, 1, unit="fraction of each batch")  # online runs only
    capacity: int = num(200_000, 16, unit="rows")  # of the dataset's replay (its newest rows are kept)
    skip_corrupt: bool = False  # skip (and log) shards that cannot be read instead of stopping


@dataclass(frozen=True)
class CollectConfig:
    """Dataset collection (collect.py): which policy acts, and where the rows go. The budget is
    run.total_env_steps; the workers are workers.num_workers on run.mode local or ray."""

    policy: Literal["expert", "random", "checkpoint"] = "expert"
    checkpoint: str | None = None  # policy checkpoint: a run directory or a checkpoint directory
    # DART-style held perturbations of the expert, so the data show recoveries: with this probability
    # a window of perturb_hold_steps acts with the expert's action plus one held Gaussian draw.
    perturb_std: float = num(0.0, 0, unit="action units")  # 0: the expert as it is
    perturb_probability: float = num(0.3, 0, 1, unit="fraction of windows")
    perturb_hold_steps: int = num(10, 1, unit="env steps")
    output: str | None = None  # the dataset directory; None: <run.runs_dir>/datasets/<run.name>
    rows_per_shard: int = num(1024, 16, unit="rows")  # a shard is at least this long (whole episodes)


@dataclass(frozen=True)
class EvalConfig:
    route_suite: str | None = None  # None: nocrash_eval on Town02 where maps exist, else generated
    town: str | None = None
    routes: tuple[int, ...] = check(
        (0, 1, 2), lambda v: len(v) >= 1 and min(v) >= 0, "a non-empty list of route indices >= 0"
    )
    traffic: Literal["empty", "regular", "dense"] = "regular"
    max_steps: int = num(3000, 1, unit="env steps")  # per route
