"""Dataset collection on Ray: one Collector (actors/collection.py) per rollout actor, each writing
its own stream's shards into the dataset directory (a filesystem every node sees on a cluster,
e.g. NFS; on one machine, the local disk). The driver hands out env steps in slices, logs
progress, replaces an actor that dies with one on a new stream (what the dead one had written
stays; what it held is lost and collected again), and finishes every collector at the end."""

from __future__ import annotations

import logging

import ray

from actors.collection import CollectionPlan, CollectionProgress
from cluster.launch import with_absolute_paths
from configs.schema import Config

logger = logging.getLogger(__name__)


@ray.remote(num_cpus=1)
class CollectorActor:
    def __init__(self, config: Config, directory: str, stream_id: int):
        import torch

        from actors.collection import Collector
        from envs.carla.server import launch_for

        torch.set_num_threads(1)
        self._server = launch_for(config.env)
        self.collector = Collector(config, directory, stream_id, self._server)

    def run(self, ticks: int) -> dict:
        return self.collector.run(ticks)

    def finish(self) -> dict:
        try:
            return self.collector.finish()
        finally:
            if self._server is not None:
                self._server.stop()


def collect_on_ray(config: Config, plan: CollectionPlan) -> list[dict]:
    """workers.num_workers collectors until plan.transitions_to_collect env steps; their final reports."""
    config = with_absolute_paths(config)
    if not ray.is_initialized():
        ray.init(address=config.run.ray_address, log_to_driver=True)
    next_stream = plan.first_stream
    actors, steps, failures = {}, {}, 0
    for _ in range(config.workers.num_workers):
        actors[next_stream] = _start(config, plan, next_stream)
        next_stream += 1
    progress = CollectionProgress(plan, config.run.progress_every_s)
    running: dict = {}  # future -> (stream, ticks asked)

    def hand_out(stream: int) -> None:
        in_flight = sum(ticks for _, ticks in running.values())
        remaining = plan.transitions_to_collect - sum(steps.values()) - in_flight
        if remaining > 0:
            ticks = min(config.workers.pull_weights_every_steps, remaining)
            running[actors[stream].run.remote(ticks)] = (stream, ticks)

    try:
        for stream in list(actors):
            hand_out(stream)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            stream, _ = running.pop(done[0])
            try:
                report = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                failures += 1
                if failures > config.workers.max_failures_in_a_row * config.workers.num_workers:
                    raise RuntimeError(f"collector actors failed {failures} times; the last: {exc}") from exc
                logger.warning(
                    "collector on stream %d failed (%s); replacing it with stream %d", stream, exc, next_stream
                )
                actors.pop(stream)
                steps.pop(stream, None)  # its unwritten rows are collected again
                stream, next_stream = next_stream, next_stream + 1
                actors[stream] = _start(config, plan, stream)
                report = {"env_steps": 0, "episodes": []}
            steps[stream] = report["env_steps"]
            progress.update(sum(steps.values()), report["episodes"])
            hand_out(stream)
    finally:
        finals = []
        for stream, actor in actors.items():
            try:
                finals.append(ray.get(actor.finish.remote()))
            except ray.exceptions.RayError as exc:
                logger.warning("collector on stream %d could not finish: %s", stream, exc)
        progress.update(sum(r["env_steps"] for r in finals), [e for r in finals for e in r["episodes"]], force=True)
    return finals


def _start(config: Config, plan: CollectionPlan, stream: int):
    return CollectorActor.options(name=f"mentor-collector-{plan.directory.name}-{stream}").remote(
        config, str(plan.directory), stream
    )
