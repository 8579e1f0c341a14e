"""Ray actor wrappers around the plain roles: rollout worker, learner, evaluator."""
from __future__ import annotations

import logging
import threading
import time

import ray

from configs.schema import Config

logger = logging.getLogger(__name__)

_MAX_CHUNKS_IN_FLIGHT = 4  # a worker waits when this many chunks are still on their way


@ray.remote
class WorkerActor:
    """A RolloutWorker in its own process; ships chunks to the learner and pulls its weights."""

    def __init__(self, config: Config, worker_uid: int, learner, feedback_handle, seed: int):
        import torch

        from actors.local_runtime import make_env
        from actors.rollout_worker import RolloutWorker
        from cluster.carla_server import launch_for
        from cluster.feedback_service import ServeFeedbackClient, SyncServeFeedbackClient
        from cluster.metrics import WorkerMetrics
        from inference.registry import model_inputs
        from learners.agent import Agent

        torch.set_num_threads(1)  # many workers share the node's cores
        # A server that cannot start fails this actor here, with the searched paths or its log's
        # tail; the driver then replaces the actor (cluster/launch.py).
        self._server = launch_for(config.env)
        self._learner = learner
        self._in_flight: list = []
        client = None
        if feedback_handle is not None and config.feedback.mode != "off":
            client_cls = SyncServeFeedbackClient if config.feedback.mode == "sync" else ServeFeedbackClient
            client = client_cls(feedback_handle, timeout_s=config.feedback.deadline_s)
        self.worker = RolloutWorker(config, worker_uid, make_env=lambda: make_env(config.env, self._server),
                                    policy=Agent(config.agent, device="cpu", seed=seed), feedback=client,
                                    ship=self._ship, model_inputs=model_inputs(config.feedback), seed=seed)
        self._pull_every = config.workers.pull_weights_every_steps
        self._metrics = WorkerMetrics(worker_uid)
        self._reported_episodes = 0

    def _ship(self, chunk: dict) -> None:
        self._in_flight.append(self._learner.add.remote(chunk))
        if len(self._in_flight) > _MAX_CHUNKS_IN_FLIGHT:
            done, self._in_flight = ray.wait(self._in_flight, num_returns=len(self._in_flight) - _MAX_CHUNKS_IN_FLIGHT)
            ray.get(done)  # surfaces a learner-side error here rather than silently

    def run(self, ticks: int) -> dict:
        """Take `ticks` env steps, pulling fresh weights every few hundred; returns a report."""
        done = 0
        while done < ticks:
            n = min(self._pull_every, ticks - done)
            self.worker.run(n)
            done += n
            latest = ray.get(self._learner.policy.remote(self.worker.policy_version))
            if latest is not None:
                self.worker.set_policy(*latest)
        return self.report()

    def report(self) -> dict:
        stats = self.worker.stats
        feedback = self.worker.feedback_report()
        episodes = stats.episode_returns[self._reported_episodes:]
        self._reported_episodes = len(stats.episode_returns)
        self._metrics.record(stats.env_steps, stats.backpressure_waits, feedback,
                             episodes[-1][0] if episodes else None, stats.simulator_failures)
        return {"env_steps": stats.env_steps, "episodes": episodes, "feedback": feedback,
                "simulator_failures": stats.simulator_failures,
                "backpressure_waits": stats.backpressure_waits, "backpressure_wait_s": stats.backpressure_wait_s,
                "policy_version": self.worker.policy_version}

    def close(self) -> None:
        """Close the env and stop this actor's CARLA server (before the driver kills the actor:
        a killed process cannot stop the server it started)."""
        try:
            self.worker.close()
        finally:
            if self._server is not None:
                self._server.stop()


@ray.remote(max_concurrency=8)
class LearnerActor:
    """The Learner with its update loop on a thread, so `add`, `policy` and `report` calls are
    served while it trains."""

    def __init__(self, config: Config, device: str):
        from cluster.metrics import LearnerMetrics
        from learners.learner import Learner

        self.learner = Learner(config, device=device)
        self._metrics = LearnerMetrics()
        self._stop = threading.Event()
        self._pause = threading.Lock()  # held by the update loop per update; save() takes it
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="learner", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                with self._pause:
                    ran = self.learner.train(max_updates=1)
                if not ran:
                    time.sleep(0.005)
        except Exception as exc:  # reported to the driver through report()
            logger.exception("learner update loop failed")
            self.error = repr(exc)

    def add(self, chunk: dict) -> int:
        return self.learner.add(chunk)

    def policy(self, known_version: int):
        return self.learner.policy(known_version)

    def report(self) -> dict:
        report = self.learner.report()
        self._metrics.record(report)
        if self.error:
            raise RuntimeError(f"the learner's update loop stopped: {self.error}")
        return report

    def save(self, directory: str) -> str:
        with self._pause:
            return str(self.learner.save(directory))

    def load(self, directory: str) -> None:
        with self._pause:
            self.learner.load(directory)

    def publish(self) -> None:
        with self._pause:
            self.learner.publish()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


@ray.remote
class EvaluatorActor:
    def __init__(self, config: Config, env_config, seed: int):
        from actors.evaluation import EvaluationWorker
        from actors.local_runtime import make_env
        from cluster.carla_server import launch_for
        from learners.agent import Agent

        ev = config.eval
        self._server = launch_for(env_config)
        self.evaluator = EvaluationWorker(lambda: make_env(env_config, self._server),
                                          Agent(config.agent, device="cpu", seed=seed), ev.routes, ev.max_steps,
                                          seed=seed)

    def evaluate(self, version: int, state: dict) -> dict:
        self.evaluator.set_policy(version, state)
        return self.evaluator.evaluate()

    def close(self) -> None:
        try:
            self.evaluator.close()
        finally:
            if self._server is not None:
                self._server.stop()
