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
import time
from pathlib import Path

import ray
from ray import serve

from actors.run_state import REPLAY_DIR
from cluster.actors import LearnerActor
from cluster.feedback_service import APP_PREFIX, feedback_app
from cluster.runtime import RayRuntime
from configs.schema import Config
from core import CannotStart

logger = logging.getLogger(__name__)


def launch(config: Config, run_dir: Path) -> RayRuntime:
    """Start (or join) Ray and place the learner and the feedback service; the workers start at the
    runtime's first step (after any checkpoint has loaded). The run directory's name names the
    run's actors and Serve app; the learner journals the replay there (on its node's disk)."""
    run_dir = Path(run_dir).resolve()
    run_id = run_dir.name
    config = with_absolute_paths(config)
    if not ray.is_initialized():
        # None joins the cluster of `ray job submit` / `ray start`, or starts a local one.
        # The project reaches the workers as an installed package (local clusters) or as the job's
        # --working-dir (ray job submit): no runtime_env here, which would clash with the job's.
        ray.init(address=config.run.ray_address, log_to_driver=True, **_local_resources(config))
    use_gpu = ray.cluster_resources().get("GPU", 0.0) >= 1.0
    logger.info("Ray cluster: %s", {k: v for k, v in ray.cluster_resources().items() if "node" not in k})
    wait_for_placement(config, use_gpu)
    learner = LearnerActor.options(num_gpus=config.learner.gpu_fraction if use_gpu else 0, num_cpus=1,
                                   name=f"mentor-learner-{run_id}").remote(
        config, str(run_dir / REPLAY_DIR), config.learner.device)
    try:  # fail fast if the learner cannot start (or cannot be placed: another run holds the GPU)
        ray.get(learner.report.remote(), timeout=max(config.run.placement_timeout_s, 60.0))
    except ray.exceptions.GetTimeoutError as exc:
        ray.kill(learner)
        raise PlacementError(f"the learner could not be placed within {max(config.run.placement_timeout_s, 60):g} s "
                             f"(it asks for {config.learner.gpu_fraction:g} GPU{'' if use_gpu else ' (none here)'} "
                             f"and 1 CPU; free now: {ray.available_resources()}); another run may hold them: "
                             "lower learner.gpu_fraction so runs share the GPU") from exc
    handle, app_name = None, None
    if config.feedback.mode != "off" and config.feedback.model != "none":
        app_name = f"{APP_PREFIX}-{run_id}"
        handle = serve.run(feedback_app(config.feedback, config.run.seed, use_gpu), name=app_name,
                           route_prefix=None)
    return RayRuntime(config, learner, handle, use_gpu, app_name)


_PATH_FIELDS = ("feedback.clip.checkpoint", "data.dataset", "agent.init_from", "collect.checkpoint", "collect.output")


def with_absolute_paths(config: Config) -> Config:
    """Relative paths in the config mean the driver's working directory; actors may run elsewhere."""
    for dotted in _PATH_FIELDS:
        *sections, name = dotted.split(".")
        path = _get(config, dotted)
        if path and not os.path.isabs(path) and (os.path.exists(path) or dotted == "collect.output"):
            config = _replace(config, [*sections, name], os.path.abspath(path))
    return config


def _get(obj, dotted: str):
    for name in dotted.split("."):
        obj = getattr(obj, name)
    return obj


def _replace(obj, names: list[str], value):
    if len(names) == 1:
        return dataclasses.replace(obj, **{names[0]: value})
    return dataclasses.replace(obj, **{names[0]: _replace(getattr(obj, names[0]), names[1:], value)})


class PlacementError(CannotStart):
    """The cluster cannot hold the run's roles; the message says what is missing and how to get it."""


def resources_needed(config: Config, use_gpu: bool) -> dict[str, float]:
    """What the roles hold at the same time: the learner, the feedback replicas and every rollout
    worker (the evaluator starts after the workers have stopped)."""
    f = config.feedback
    replicas = f.replicas if f.mode != "off" and f.model != "none" else 0
    needed = {"CPU": 1.0 + replicas * f.replica_cpus + config.workers.num_workers}
    if use_gpu:
        needed["GPU"] = config.learner.gpu_fraction + replicas * f.gpu_fraction
    if config.workers.server_resource:
        needed[config.workers.server_resource] = float(config.workers.num_workers)
    return needed


def wait_for_placement(config: Config, use_gpu: bool, poll_s: float = 2.0) -> None:
    """Wait up to run.placement_timeout_s for the cluster to have the plan's resources free (an
    autoscaler adds nodes, another run ends), then stop with what is missing instead of waiting
    for ever."""
    needed = resources_needed(config, use_gpu)
    deadline = time.monotonic() + config.run.placement_timeout_s
    while True:
        total = ray.available_resources()  # what other runs on the cluster leave free
        missing = {k: v for k, v in needed.items() if total.get(k, 0.0) + 1e-9 < v}
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise PlacementError(_placement_advice(config, needed, total, missing))
        time.sleep(poll_s)


def _placement_advice(config: Config, needed: dict, total: dict, missing: dict) -> str:
    have = ", ".join(f"{k} {total.get(k, 0.0):g}" for k in missing)
    want = ", ".join(f"{k} {v:g}" for k, v in missing.items())
    advice = [f"the run needs {want} at once (learner 1 CPU, {config.workers.num_workers} rollout workers 1 CPU "
              f"each, feedback replicas {config.feedback.replica_cpus} CPU each) but the cluster has {have} "
              f"free after waiting run.placement_timeout_s = {config.run.placement_timeout_s:g} s"]
    if "CPU" in missing:
        advice.append(f"start the cluster with enough logical CPUs (`ray start --head --num-cpus="
                      f"{int(needed['CPU'])}`: the roles time-share the cores), or run fewer workers "
                      f"(workers.num_workers="
                      f"{max(1, config.workers.num_workers - int(needed['CPU'] - total.get('CPU', 0.0)))})")
    if "GPU" in missing:
        advice.append("lower learner.gpu_fraction / feedback.gpu_fraction so they share one GPU")
    if config.workers.server_resource in missing:
        advice.append(f"add nodes that declare the {config.workers.server_resource} resource, or fewer workers")
    return "; ".join(advice)


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
