"""All the wiring in one function: Ray, the learner on a GPU when there is one, the feedback
service, the rollout workers on CPUs; it returns the runtime the training loop drives
(cluster/runtime.py), with nothing running yet.

Every run names its own actors and Serve application after its run id, so two runs on one
cluster never replace or delete each other's.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import uuid

import ray
from ray import serve

from cluster.actors import LearnerActor
from cluster.feedback_service import APP_PREFIX, feedback_app
from cluster.runtime import RayRuntime
from configs.schema import Config

logger = logging.getLogger(__name__)


def launch(config: Config, run_id: str | None = None) -> RayRuntime:
    """Start (or join) Ray and place the learner and the feedback service; the workers start at the
    runtime's first step (after any checkpoint has loaded)."""
    run_id = run_id or f"{config.run.name}-{uuid.uuid4().hex[:8]}"
    config = with_absolute_paths(config)
    if not ray.is_initialized():
        # None joins the cluster of `ray job submit` / `ray start`, or starts a local one.
        # The project reaches the workers as an installed package (local clusters) or as the job's
        # --working-dir (ray job submit): no runtime_env here, which would clash with the job's.
        ray.init(address=config.run.ray_address, log_to_driver=True, **_local_resources(config))
    use_gpu = ray.cluster_resources().get("GPU", 0.0) >= 1.0
    logger.info("Ray cluster: %s", {k: v for k, v in ray.cluster_resources().items() if "node" not in k})
    learner = LearnerActor.options(num_gpus=config.learner.gpu_fraction if use_gpu else 0, num_cpus=1,
                                   name=f"mentor-learner-{run_id}").remote(config, config.learner.device)
    ray.get(learner.report.remote())  # fail fast if the learner cannot start
    handle, app_name = None, None
    if config.feedback.mode != "off" and config.feedback.model != "none":
        app_name = f"{APP_PREFIX}-{run_id}"
        handle = serve.run(feedback_app(config.feedback, config.run.seed, use_gpu), name=app_name,
                           route_prefix=None)
    return RayRuntime(config, learner, handle, use_gpu, app_name)


def with_absolute_paths(config: Config) -> Config:
    """Relative paths in the config mean the driver's working directory; actors may run elsewhere."""
    checkpoint = config.feedback.clip.checkpoint
    if checkpoint and not os.path.isabs(checkpoint) and os.path.exists(checkpoint):
        clip = dataclasses.replace(config.feedback.clip, checkpoint=os.path.abspath(checkpoint))
        config = dataclasses.replace(config, feedback=dataclasses.replace(config.feedback, clip=clip))
    return config


def cpus_needed(config: Config) -> int:
    """Logical CPUs the plan asks for: learner, workers, feedback replicas, the evaluator."""
    feedback = config.feedback.replicas * config.feedback.replica_cpus if config.feedback.mode != "off" else 0
    return 1 + config.workers.num_workers + feedback + 1


def _local_resources(config: Config) -> dict:
    """When this process starts the cluster itself, give it enough logical CPUs for the plan:
    a laptop with fewer cores then time-shares them instead of leaving workers unscheduled."""
    starts_local = config.run.ray_address == "local" or (
        config.run.ray_address is None and not os.environ.get("RAY_ADDRESS") and not _cluster_running())
    if not starts_local:
        return {}
    resources = {"num_cpus": max(os.cpu_count() or 1, cpus_needed(config))}
    if config.workers.server_resource:  # one unit per rollout actor and the evaluator
        resources["resources"] = {config.workers.server_resource: config.workers.num_workers + 1}
    return resources


def _cluster_running() -> bool:
    """Whether `ray start` left a cluster on this machine (ray.init would join it)."""
    try:
        from ray._private.services import find_gcs_addresses

        return bool(find_gcs_addresses())
    except Exception:  # noqa: BLE001 - private API: when unsure, let ray.init decide
        return False
