"""All the wiring in one function: Ray, the learner on a GPU when there is one, the feedback
service; it returns the Ray transport (cluster/transport.py) that the runtime skeleton drives
(runtimes/skeleton.py starts the workers on CPUs at its first step), with nothing running yet.

Every run names its own actors and Serve application after its run id, so two runs on one
cluster never replace or delete each other's. A run that joins a cluster also starts a detached
janitor that deletes its Serve app if the driver is killed (cluster/feedback_service.py).

A cluster that this process starts itself (`ray.init()` without an address) listens on the
loopback interface only (GCS, raylet, workers, dashboard and its agents, the metrics exporters)
unless $MENTOR_RAY_NODE_IP names the address to use instead, creates the Ray auth token file
(~/.ray/auth_token) readable by its owner only, and is ended with the driver even when the driver
is killed (cluster/local_reaper.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import stat
import subprocess
import sys
import time
from pathlib import Path

import ray
from ray import serve

from cluster.actors import LearnerActor
from cluster.feedback_service import APP_PREFIX, feedback_app, retire_janitor, start_janitor
from cluster.transport import RayTransport
from configs.schema import Config
from core import CannotStart
from runtimes.contracts import Mode
from runtimes.run_state import REPLAY_DIR

logger = logging.getLogger(__name__)

NODE_IP_ENV_VAR = "MENTOR_RAY_NODE_IP"  # the address a cluster started here listens on (default: loopback)
LOOPBACK = "127.0.0.1"
_RAY_CLUSTER_MODE_ENV_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's switch: "0" = a loopback node address
_TOKEN_BYTES = 32  # what `ray get-auth-token --generate` makes: 256 bits, hex
_OWNER_ONLY = 0o600
_REAPER = Path(__file__).with_name("local_reaper.py")
_REAPER_EXIT_TIMEOUT_S = 5.0


def launch(config: Config, mode: Mode, run_dir: Path) -> RayTransport:
    """Start (or join) Ray and place the learner (when the mode has one) and the feedback service;
    the workers start at the runtime's first step (after any checkpoint has loaded). The run
    directory's name names the run's actors and Serve app; the learner journals the replay there
    (on its node's disk)."""
    run_dir = Path(run_dir).resolve()
    run_id = run_dir.name
    config = with_absolute_paths(config)
    on_shutdown = connect(config)
    use_gpu = ray.cluster_resources().get("GPU", 0.0) >= 1.0
    logger.info("Ray cluster: %s", {k: v for k, v in ray.cluster_resources().items() if "node" not in k})
    wait_for_placement(config, use_gpu, mode.has_learner)
    if not mode.has_learner:
        return RayTransport(config, mode, None, None, use_gpu, on_shutdown=on_shutdown)
    learner = LearnerActor.options(
        num_gpus=config.learner.gpu_fraction if use_gpu else 0, num_cpus=1, name=f"mentor-learner-{run_id}"
    ).remote(config, str(run_dir / REPLAY_DIR), config.learner.device)
    try:  # fail fast if the learner cannot start (or cannot be placed: another run holds the GPU)
        ray.get(learner.report.remote(), timeout=max(config.run.placement_timeout_s, 60.0))
    except ray.exceptions.GetTimeoutError as exc:
        ray.kill(learner)
        raise PlacementError(
            f"the learner could not be placed within {max(config.run.placement_timeout_s, 60):g} s "
            f"(it asks for {config.learner.gpu_fraction:g} GPU{'' if use_gpu else ' (none here)'} "
            f"and 1 CPU; free now: {ray.available_resources()}); another run may hold them: "
            "lower learner.gpu_fraction so runs share the GPU"
        ) from exc
    handle, app_name, janitor = None, None, None
    if config.feedback.mode != "off" and config.feedback.model != "none":
        app_name = f"{APP_PREFIX}-{run_id}"
        # A cluster this process started ends with it, Serve app included; on any other, a janitor
        # deletes the app if this process is killed (and a janitor left by an earlier driver of this
        # run must not delete the app deployed now).
        joined = not _started_here()
        if joined:
            retire_janitor(run_id)
        handle = serve.run(feedback_app(config.feedback, config.run.seed, use_gpu), name=app_name, route_prefix=None)
        if joined:
            janitor = start_janitor(run_id, app_name, learner)
    return RayTransport(config, mode, learner, handle, use_gpu, app_name, janitor=janitor, on_shutdown=on_shutdown)


def connect(config: Config):
    """Join the cluster (`ray job submit`, `ray start`, run.ray_address) or start a local one, bound
    to loopback, with an owner-only token file and a reaper; returns what the runtime's shutdown
    calls last (None when there is nothing to do)."""
    if ray.is_initialized():
        return None
    resources = _local_resources(config)
    secure_token_file(starts_cluster=bool(resources))
    # The project reaches the workers as an installed package (local clusters) or as the job's
    # --working-dir (ray job submit): no runtime_env here, which would clash with the job's.
    if not resources:  # None joins the cluster of `ray job submit` / `ray start`
        ray.init(address=config.run.ray_address, log_to_driver=True)
        return None
    node_ip = os.environ.get(NODE_IP_ENV_VAR) or LOOPBACK
    with _node_address(node_ip) as address_args:
        ray.init(address=config.run.ray_address, log_to_driver=True, **resources, **address_args)
    logger.info("started a local Ray cluster listening on %s ($%s names another address)", node_ip, NODE_IP_ENV_VAR)
    return start_reaper()


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


def resources_needed(config: Config, use_gpu: bool, with_learner: bool = True) -> dict[str, float]:
    """What the roles hold at the same time: the learner (collection has none), the feedback
    replicas and every rollout worker (the evaluator starts after the workers have stopped)."""
    f = config.feedback
    replicas = f.replicas if f.mode != "off" and f.model != "none" else 0
    learner = 1.0 if with_learner else 0.0
    needed = {"CPU": learner + replicas * f.replica_cpus + config.workers.num_workers}
    if use_gpu:
        needed["GPU"] = (config.learner.gpu_fraction if with_learner else 0.0) + replicas * f.gpu_fraction
    if config.workers.server_resource:
        needed[config.workers.server_resource] = float(config.workers.num_workers)
    return needed


def wait_for_placement(config: Config, use_gpu: bool, with_learner: bool = True, poll_s: float = 2.0) -> None:
    """Wait up to run.placement_timeout_s for the cluster to have the plan's resources free (an
    autoscaler adds nodes, another run ends), then stop with what is missing instead of waiting
    for ever."""
    needed = resources_needed(config, use_gpu, with_learner)
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
    advice = [
        f"the run needs {want} at once (learner 1 CPU, {config.workers.num_workers} rollout workers 1 CPU "
        f"each, feedback replicas {config.feedback.replica_cpus} CPU each) but the cluster has {have} "
        f"free after waiting run.placement_timeout_s = {config.run.placement_timeout_s:g} s"
    ]
    if "CPU" in missing:
        advice.append(
            f"start the cluster with enough logical CPUs (`ray start --head --num-cpus="
            f"{int(needed['CPU'])}`: the roles time-share the cores), or run fewer workers "
            f"(workers.num_workers="
            f"{max(1, config.workers.num_workers - int(needed['CPU'] - total.get('CPU', 0.0)))})"
        )
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
    a laptop with fewer cores then time-shares them instead of leaving workers unscheduled. Empty
    when it joins a cluster."""
    starts_local = config.run.ray_address == "local" or (
        config.run.ray_address is None and not os.environ.get("RAY_ADDRESS") and not _cluster_running()
    )
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


# ------------------------------------------------------------------- a local cluster started here


@contextlib.contextmanager
def _node_address(ip: str):
    """Within this block, a cluster that ray.init() starts takes `ip` as its node address.

    Ray 2.60 starts the GCS, the raylet and every worker's gRPC server on all interfaces, and the
    agents and metrics exporters on the node address, unless the node address is loopback: then
    all of them bind 127.0.0.1 only. On Linux, ray.init(_node_ip_address="127.0.0.1") is replaced
    by the machine's network address (services.resolve_ip_for_localhost); a loopback node address is
    what Ray uses where clusters are off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, the macOS and Windows
    default). So for loopback that switch is set here, in this process (where Ray read it at import)
    and in the environment the cluster's processes inherit, and restored afterwards."""
    from ray._private import ray_constants

    saved = os.environ.get(_RAY_CLUSTER_MODE_ENV_VAR), ray_constants.ENABLE_RAY_CLUSTER
    if ip == LOOPBACK:
        os.environ[_RAY_CLUSTER_MODE_ENV_VAR] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield {} if ip == LOOPBACK else {"_node_ip_address": ip}
    finally:
        env, ray_constants.ENABLE_RAY_CLUSTER = saved
        if env is None:
            os.environ.pop(_RAY_CLUSTER_MODE_ENV_VAR, None)
        else:
            os.environ[_RAY_CLUSTER_MODE_ENV_VAR] = env


def token_path() -> Path:
    """Where Ray looks for its auth token when $RAY_AUTH_TOKEN(_PATH) are unset."""
    return Path.home() / ".ray" / "auth_token"


def secure_token_file(starts_cluster: bool) -> None:
    """Ray 2.60 turns token authentication on for a cluster that ray.init() starts, and writes a new
    token to ~/.ray/auth_token with the process's umask (usually 0644: readable by every user of the
    machine, who could then use the cluster). When a cluster is about to start here and Ray would
    make that file, make it first, owner-only; a token file already there that others can read is
    made owner-only (with a warning)."""
    path = token_path()
    mode = os.environ.get("RAY_AUTH_MODE", "token").lower()
    wants_file = (
        starts_cluster
        and mode == "token"
        and not os.environ.get("RAY_AUTH_TOKEN")
        and not os.environ.get("RAY_AUTH_TOKEN_PATH")
    )
    if wants_file and not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _OWNER_ONLY)
        except FileExistsError:  # another process made it meanwhile
            pass
        else:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_hex(_TOKEN_BYTES))
            logger.info("created the Ray auth token %s (owner-only)", path)
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if info.st_mode & 0o077 and info.st_uid == os.getuid():
        os.chmod(path, _OWNER_ONLY)
        logger.warning(
            "the Ray auth token %s was readable by other users (mode %o); it is owner-only now",
            path,
            stat.S_IMODE(info.st_mode),
        )


def _node_processes() -> list[int]:
    """Pids of the node processes (GCS, raylet, dashboard, ...) this process started; empty when it
    joined a cluster."""
    node = getattr(ray._private.worker, "_global_node", None)  # private: the node ray.init made here
    processes = getattr(node, "all_processes", None) or {}
    return [info.process.pid for infos in processes.values() for info in infos if info.process is not None]


def _started_here() -> bool:
    """Whether this process started the cluster it is connected to (which then ends with it)."""
    return bool(_node_processes())


def start_reaper():
    """Start cluster/local_reaper.py over this process's local cluster; returns the callable that
    lets it go once the cluster has been shut down cleanly (None off Linux, or with nothing to
    watch)."""
    roots = _node_processes()
    if not sys.platform.startswith("linux") or not roots:
        return None
    read_end, write_end = os.pipe()  # the write end is not inherited: only this process holds it
    try:
        reaper = subprocess.Popen(
            [sys.executable, str(_REAPER), *map(str, roots)],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(read_end)

    def release() -> None:
        """After a clean shutdown: tell the reaper to exit without ending anything."""
        if ray.is_initialized():  # the cluster stays (run.shutdown_ray=false): keep watching
            return
        try:
            os.write(write_end, b"q")
            os.close(write_end)
            reaper.wait(timeout=_REAPER_EXIT_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            logger.debug("the local reaper did not exit", exc_info=True)

    return release
