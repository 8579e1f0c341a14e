"""Collection mode: rollout workers whose rows go to dataset shards instead of a learner.

A `Collector` is one worker on its own stream with its own ParquetSink and the acting policy of
collect.policy; the runtime skeleton runs it in this process (run.mode local) or inside a Ray actor
(run.mode ray), like any worker. `collection_plan` says what a collection into a directory still has to
do: a directory that already holds shards resumes (new streams after the highest on disk, the
budget minus the transitions already written).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pyarrow.parquet as pq

from configs.schema import Config, RunConfig
from core import StepReport
from dataset.parquet import create_dataset, list_shards
from envs.maps import GENERATED_TOWN, MapSearch
from envs.route_suites import DEFAULT_SUITE_FOR_TOWN
from workers.acting import collection_policy
from workers.assembly import build_rollout_worker

logger = logging.getLogger(__name__)


def collection_config(config: Config) -> Config:
    """What a collection runs: no feedback (labels come later, cluster/label.py), no random warm-up
    (collect.policy random is the random policy)."""
    return dataclasses.replace(
        config,
        feedback=dataclasses.replace(config.feedback, mode="off"),
        workers=dataclasses.replace(config.workers, random_steps=0),
    )


def dataset_directory(config: Config) -> Path:
    return Path(config.collect.output or Path(config.run.runs_dir) / "datasets" / config.run.name)


def dataset_metadata(config: Config) -> dict:
    town = config.env.town or MapSearch.from_settings(config.env.maps_dir).default_town()
    c = config.collect
    policy = {
        "expert": "expert" if c.perturb_std == 0 else "expert+dart",
        "random": "random",
        "checkpoint": "checkpoint",
    }[c.policy]
    try:
        version = metadata.version("mentor")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "town": town,
        "traffic": config.env.traffic,
        "backend": config.env.backend,
        "route_suite": config.env.route_suite or DEFAULT_SUITE_FOR_TOWN.get(town, "random"),
        "policy": policy,
        "perturb_std": c.perturb_std,
        "perturb_probability": c.perturb_probability,
        "perturb_hold_steps": c.perturb_hold_steps,
        "checkpoint": c.checkpoint,
        "seed": config.run.seed,
        "mentor_version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "generated_town": town == GENERATED_TOWN,
    }


@dataclass(frozen=True)
class CollectionPlan:
    directory: Path
    transitions_on_disk: int
    first_stream: int
    transitions_to_collect: int


def collection_plan(config: Config) -> CollectionPlan:
    """Create (or check, when resuming) the dataset directory and say what is left to collect."""
    directory = create_dataset(dataset_directory(config), dataset_metadata(config))
    shards = list_shards(directory)
    on_disk = sum(_shard_transitions(shard.path) for shard in shards)
    first_stream = max((s.stream_id for s in shards), default=-1) + 1
    return CollectionPlan(directory, on_disk, first_stream, max(config.run.total_env_steps - on_disk, 0))


def _shard_transitions(path: Path) -> int:
    meta = pq.read_schema(path).metadata or {}
    return int(json.loads(meta[b"mentor"])["transitions"]) if b"mentor" in meta else 0


class Collector:
    """One rollout worker writing its rows to its own shards (a runtimes/contracts.py Worker)."""

    def __init__(self, config: Config, directory: Path, stream_id: int, sync, server=None):
        """`sync`: the transport's weights pull, which has no learner to ask here (nothing new, ever)."""
        from dataset.parquet import ParquetSink
        from dataset.schema import EXTRA_SPEC

        self.sink = ParquetSink(directory, stream_id, config.collect.rows_per_shard)
        self.worker = build_rollout_worker(
            config,
            stream_id,
            ship=self.sink.write,
            sync=sync,
            send=None,
            server=server,
            policy_for=lambda env, seed: collection_policy(config, env, seed),
            extra_fields=EXTRA_SPEC,
        )

    def run(self, ticks: int) -> None:
        self.worker.run(ticks)

    def request_stop(self) -> None:
        self.worker.request_stop()

    def drain(self, timeout_s: float | None = None) -> None:
        """Ship and write everything (the last shard may end inside an episode)."""
        self.worker.drain(timeout_s)
        self.sink.close()

    def report(self) -> dict:
        return self.worker.report() | {
            "rows_written": self.sink.rows_written,
            "transitions_written": self.sink.transitions_written,
        }

    def close(self) -> None:
        self.worker.close()


class CollectionMode:
    """Collection: rollout workers drive with collect.policy and write dataset shards; no learner,
    no evaluation. A rerun on the same directory resumes after what is on disk (collection_plan)."""

    name = "collection"
    has_learner = False
    evaluates = False

    def num_workers(self, config: Config) -> int:
        return config.workers.num_workers

    def build_worker(self, config: Config, stream_id: int, ship, sync, send, server) -> Collector:
        return Collector(config, dataset_directory(config), stream_id, sync, server)

    def train(self, learner, run: RunConfig) -> None:
        """Nothing learns."""


MODE = CollectionMode()


class CollectionProgress:
    """Transitions collected against the budget, episodes and their scores, logged every few seconds."""

    def __init__(self, plan: CollectionPlan, every_s: float):
        self.plan, self.every_s = plan, every_s
        self.started = self._last = time.monotonic()
        self.episodes: list = []

    def update(self, report: StepReport, force: bool = False) -> None:
        """Log the runtime's report (its env_steps count what was on disk before too)."""
        self.episodes.extend(report.episodes)
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        env_steps = int(report.metrics["env_steps"]) - self.plan.transitions_on_disk
        rate = env_steps / max(now - self.started, 1e-6)
        left = max(self.plan.transitions_to_collect - env_steps, 0)
        scores = [e.driving_score for e in self.episodes[-20:]]
        logger.info(
            "collected %d/%d transitions (%d already on disk) | %.0f steps/s | ETA %.0f s | episodes %d, "
            "driving score (last 20) %.3f",
            env_steps,
            self.plan.transitions_to_collect,
            self.plan.transitions_on_disk,
            rate,
            left / max(rate, 1e-6),
            len(self.episodes),
            sum(scores) / len(scores) if scores else float("nan"),
        )
