"""All the wiring in one function: Ray, the learner on a GPU when there is one, the feedback
service, the rollout workers on CPUs; and the runtime the training loop drives.

A rollout worker that dies is replaced (its shipped data is already in the replay); a dead
feedback replica only makes its items unavailable; the Serve app is deleted at shutdown.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time

import ray
from ray import serve

from cluster.actors import EvaluatorActor, LearnerActor, WorkerActor
from cluster.feedback_service import APP_NAME, feedback_app
from cluster.metrics import DriverMetrics
from configs.schema import Config

logger = logging.getLogger(__name__)

_TICKS_PER_CALL = 256  # env steps a worker takes per remote call


def launch(config: Config) -> "RayRuntime":
    """Start (or join) Ray and place every role; returns the runtime for the training loop."""
    config = with_absolute_paths(config)
    if not ray.is_initialized():
        # None joins the cluster of `ray job submit` / `ray start`, or starts a local one.
        # The project reaches the workers as an installed package (local clusters) or as the job's
        # --working-dir (ray job submit): no runtime_env here, which would clash with the job's.
        ray.init(address=config.run.ray_address, log_to_driver=True, **_local_resources(config))
    gpus = ray.cluster_resources().get("GPU", 0.0)
    use_gpu = gpus >= 1.0
    logger.info("Ray cluster: %s", {k: v for k, v in ray.cluster_resources().items() if "node" not in k})
    learner = LearnerActor.options(num_gpus=config.learner.gpu_fraction if use_gpu else 0, num_cpus=1,
                                   name="mentor-learner").remote(
        config, config.learner.device)
    ray.get(learner.report.remote())  # fail fast if the learner cannot start
    handle = None
    if config.feedback.mode != "off" and config.feedback.model != "none":
        handle = serve.run(feedback_app(config.feedback, config.run.seed, use_gpu), name=APP_NAME,
                           route_prefix=None)
    runtime = RayRuntime(config, learner, handle, use_gpu)
    for index in range(config.workers.num_workers):
        runtime.start_worker(index)
    learner.start.remote()
    return runtime


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


class RayRuntime:
    def __init__(self, config: Config, learner, handle, use_gpu: bool):
        self.config = config
        self.learner = learner
        self.handle = handle
        self.use_gpu = use_gpu
        self.workers: dict[int, tuple] = {}  # index -> (actor, uid, in-flight run call)
        self._next_uid = 0  # every worker, replacements included, gets its own stream id
        self._episodes: list[tuple[float, float, float]] = []
        self._episodes_reported = 0
        self._worker_reports: dict[int, dict] = {}
        self._metrics = DriverMetrics()
        self._started, self._last_steps, self._last_time = time.monotonic(), 0, time.monotonic()
        self.replaced_workers = 0
        self._failures_in_a_row: dict[int, int] = {}  # per worker slot, reset by a report
        self._owns_servers = config.env.backend == "carla" and config.env.carla.launch
        self.env_steps = 0
        self._last_progress = time.monotonic()

    def start_worker(self, index: int) -> None:
        uid, self._next_uid = self._next_uid, self._next_uid + 1
        resources = {self.config.workers.server_resource: 1} if self.config.workers.server_resource else None
        actor = WorkerActor.options(num_cpus=1, max_restarts=0, resources=resources).remote(
            self.config, uid, self.learner, self.handle, seed=self.config.run.seed + 1000 * uid)
        self.workers[index] = (actor, uid, actor.run.remote(_TICKS_PER_CALL))

    def step(self) -> dict[str, float]:
        """Wait briefly for worker reports, replace dead workers, return the merged report."""
        calls = {self.workers[i][2]: i for i in self.workers}
        ready, _ = ray.wait(list(calls), num_returns=1, timeout=2.0)
        self._warn_if_stalled(bool(ready))
        for ref in ready:
            index = calls[ref]
            actor, uid, _ = self.workers[index]
            try:
                report = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                # Includes an actor whose constructor failed (e.g. its CARLA server never became ready).
                logger.warning("rollout worker %d (uid %d) died; starting a replacement: %s", index, uid, exc)
                self._replace(index, exc)
                continue
            except ray.exceptions.RayTaskError as exc:  # e.g. its simulator failed beyond a reset
                logger.error("rollout worker %d (uid %d) failed; starting a replacement:\n%s", index, uid, exc)
                _stop_all([actor], self._owns_servers)
                self._replace(index, exc)
                continue
            self._failures_in_a_row[index] = 0
            self._episodes.extend(report.pop("episodes"))
            self._worker_reports[index] = report
            self.workers[index] = (actor, uid, actor.run.remote(_TICKS_PER_CALL))
        learner = ray.get(self.learner.report.remote())
        self.env_steps = int(learner["env_steps"])
        now = time.monotonic()
        rate = (self.env_steps - self._last_steps) / max(now - self._last_time, 1e-6)
        self._last_steps, self._last_time = self.env_steps, now
        self._metrics.record(rate, self._episodes[-20:], self.replaced_workers)
        return {**learner, **self._feedback_summary(), "env_steps_per_s": rate,
                "replaced_workers": float(self.replaced_workers),
                **({"episode_return": sum(e[0] for e in self._episodes[-10:]) / len(self._episodes[-10:])}
                   if self._episodes else {})}

    def _replace(self, index: int, error: Exception) -> None:
        """Start a new actor in the slot, unless the slot keeps failing without ever reporting: then
        the cause (a missing CARLA install, a server that never gets ready) will not go away by
        itself, and the run stops with it."""
        failures = self._failures_in_a_row.get(index, 0) + 1
        self._failures_in_a_row[index] = failures
        limit = self.config.workers.max_failures_in_a_row
        if failures >= limit:
            raise RuntimeError(f"rollout worker slot {index} failed {failures} times in a row without reporting "
                               f"(workers.max_failures_in_a_row = {limit}); the last failure:\n{error}") from error
        self.replaced_workers += 1
        self.start_worker(index)

    def _warn_if_stalled(self, progressed: bool) -> None:
        now = time.monotonic()
        if progressed:
            self._last_progress = now
        elif now - self._last_progress > 60.0:
            logger.warning("no rollout worker has reported for %.0f s; actors may be waiting for resources. "
                           "Available: %s", now - self._last_progress, ray.available_resources())
            self._last_progress = now

    def _feedback_summary(self) -> dict[str, float]:
        reports = list(self._worker_reports.values())
        if not reports:
            return {}
        total = lambda key: sum(r["feedback"][key] for r in reports)  # noqa: E731
        wanted = total("answered") + total("malformed") + total("expired")
        return {"feedback/pending": float(total("pending")),
                "feedback/availability": total("answered") / wanted if wanted else 1.0,
                "feedback/malformed": float(total("malformed")), "feedback/expired": float(total("expired")),
                "feedback/late": float(total("late")),
                "feedback/latency_s": sum(r["feedback"]["latency_s"] for r in reports) / len(reports),
                "backpressure_waits": float(sum(r["backpressure_waits"] for r in reports))}

    def new_episodes(self) -> list[tuple[float, float, float]]:
        rows, self._episodes_reported = self._episodes[self._episodes_reported:], len(self._episodes)
        return rows

    def save(self, directory) -> None:
        ray.get(self.learner.save.remote(str(directory)))

    def load(self, directory) -> None:
        ray.get(self.learner.load.remote(str(directory)))

    def evaluate(self) -> dict:
        """Stop collecting and learning (everything shipped is in the replay), then drive the suite."""
        from actors.local_runtime import eval_env_config

        ray.get(self.learner.stop.remote())
        _stop_all([actor for actor, _, _ in self.workers.values()], self._owns_servers)
        self.workers = {}
        ray.get(self.learner.publish.remote())
        version, state = ray.get(self.learner.policy.remote(-1))
        resources = {self.config.workers.server_resource: 1} if self.config.workers.server_resource else None
        evaluator = EvaluatorActor.options(num_cpus=1, resources=resources).remote(
            self.config, eval_env_config(self.config), self.config.run.seed)
        try:
            return ray.get(evaluator.evaluate.remote(version, state))
        finally:
            _stop_all([evaluator], self._owns_servers)

    def kill_worker(self, index: int) -> None:
        """For tests and drills: kill a rollout worker; the next step() replaces it."""
        ray.kill(self.workers[index][0], no_restart=True)

    def shutdown(self) -> None:
        try:
            ray.get(self.learner.stop.remote(), timeout=60)
        except Exception:
            logger.debug("learner stop", exc_info=True)
        _stop_all([actor for actor, _, _ in self.workers.values()], self._owns_servers)
        ray.kill(self.learner)
        if self.handle is not None:
            serve.delete(APP_NAME)  # a Serve app outlives the job otherwise
        if self.config.run.shutdown_ray:
            ray.shutdown()



def _stop_all(actors, graceful: bool, timeout_s: float = 60.0) -> None:
    """Kill actors; `graceful` first lets them close their envs and stop their CARLA servers (a
    killed process leaves the server it started running). A close waits for the actor's current
    call, so all are asked at once and waited for together."""
    if graceful:
        closing = [actor.close.remote() for actor in actors]
        try:
            ray.wait(closing, num_returns=len(closing), timeout=timeout_s)
        except Exception:  # dead or failed actors: the kill below is what matters
            logger.debug("closing actors before the kill failed", exc_info=True)
    for actor in actors:
        ray.kill(actor)
