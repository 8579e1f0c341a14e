"""Ray actor wrappers around the plain roles: a mode's worker, the learner, the evaluator. Each is
built by the same code as in local mode (the mode's build_worker, workers/assembly.py); only the
transport differs (cluster/transport.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import ray

from configs.schema import Config
from learners.bev_codec import pack_chunk

logger = logging.getLogger(__name__)

_MAX_CHUNKS_IN_FLIGHT = 4  # a worker waits when this many chunks are still on their way
_LEARNER_POLL_S = 0.05  # how often a worker that is too far ahead of the learner asks again
_CONTROL = "control"  # a WorkerActor's concurrency group for calls that must not queue behind run()


class ChunkShipper:
    """A worker's way to the learner: chunks go LZ4-packed (bev_codec.pack_chunk: ~100x fewer bytes
    through the object store, none encoded on the learner's core), at most _MAX_CHUNKS_IN_FLIGHT on
    their way; when the learner's answer says the workers are max_insert_lead ahead of the train
    ratio, it waits for the learner (counted in `waits` and `wait_s`)."""

    def __init__(self, learner, stopping: Callable[[], bool] = lambda: False):
        """`stopping`: true once the worker stops; it then no longer waits for the learner to catch
        up (what it still ships is the little it held)."""
        self._learner = learner
        self._stopping = stopping
        self._in_flight: list = []
        self.waits, self.wait_s = 0, 0.0

    def ship(self, chunk: dict) -> None:
        self._in_flight.append(self._learner.add.remote(pack_chunk(chunk)))
        if len(self._in_flight) > _MAX_CHUNKS_IN_FLIGHT:
            done, self._in_flight = ray.wait(self._in_flight, num_returns=len(self._in_flight) - _MAX_CHUNKS_IN_FLIGHT)
            credits = ray.get(done)  # surfaces a learner-side error here rather than silently
            if credits[-1] is not None and credits[-1] <= 0:
                self._wait_for_learner()

    def _wait_for_learner(self) -> None:
        started = time.monotonic()
        self.waits += 1
        while not self._stopping():
            credit = ray.get(self._learner.inserts_allowed.remote())
            if credit is None or credit > 0:
                break
            time.sleep(_LEARNER_POLL_S)
        self.wait_s += time.monotonic() - started

    def drain(self) -> None:
        """Wait until the learner holds every chunk shipped."""
        ray.get(self._in_flight)
        self._in_flight = []


@ray.remote(concurrency_groups={_CONTROL: 1})
class WorkerActor:
    """A mode's worker (a RolloutWorker online, a Collector when collecting) in its own process;
    ships chunks to the learner (when the mode has one) and pulls its weights.

    Its calls run one at a time (run, drain, report, close), except request_stop, which has a
    concurrency group of its own so that it reaches a worker in the middle of a run() call."""

    def __init__(self, config: Config, mode_name: str, stream_id: int, learner, feedback_handle):
        import torch

        from cluster.feedback_service import serve_sender
        from cluster.metrics import WorkerMetrics
        from envs.carla.server import launch_for
        from runtimes.registry import load_mode

        torch.set_num_threads(1)  # many workers share the node's cores
        # A server that cannot start fails this actor here, with the searched paths or its log's
        # tail; the driver then replaces the actor (runtimes/skeleton.py).
        self._server = launch_for(config.env)
        self._learner = learner
        self._stopping = threading.Event()
        self._shipper = ChunkShipper(learner, self._stopping.is_set) if learner is not None else None
        send = serve_sender(feedback_handle) if feedback_handle is not None else None
        self.worker = load_mode(mode_name).build_worker(
            config,
            stream_id,
            ship=self._shipper.ship if self._shipper else None,
            sync=self._sync,
            send=send,
            server=self._server,
        )
        self._metrics = WorkerMetrics(stream_id)

    def _sync(self, known_version: int):
        if self._learner is None:
            return 0, None  # nothing to pull without a learner
        return ray.get(self._learner.sync.remote(known_version))

    def run(self, ticks: int) -> dict:
        """Take `ticks` env steps (syncing weights on the worker's own schedule); returns a report."""
        self.worker.run(ticks)
        return self.report()

    @ray.method(concurrency_group=_CONTROL)
    def request_stop(self) -> None:
        """End the run() call in progress at its next tick (or backpressure wait): a stopping
        driver does not wait for the rest of a call's ticks behind a slow feedback model."""
        self._stopping.set()
        self.worker.request_stop()

    def drain(self, grace_s: float | None = None) -> dict:
        """Ship everything held and wait until the learner has it all; the final report. Pending
        rows wait at most `grace_s` for their feedback (default: their deadline), then ship with
        the unanswered fields unavailable (mask 0)."""
        self.worker.drain(grace_s)
        if self._shipper is not None:
            self._shipper.drain()
        return self.report()

    def report(self) -> dict:
        report = self.worker.report()
        self._metrics.record(report)
        return report

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
    """The Learner with its update loop on a thread, so `add`, `sync` and `report` calls are
    served while it trains."""

    def __init__(self, config: Config, replay_dir: str, device: str):
        from cluster.metrics import LearnerMetrics
        from learners.learner import Learner

        self.learner = Learner(config, replay_dir, device=device)
        self._metrics = LearnerMetrics()
        self._stop = threading.Event()
        self._pause = threading.Lock()  # held by the update loop per update; save() takes it
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> None:
        self.learner.check_can_start()
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
            self.error = f"{type(exc).__name__}: {exc}"

    def add(self, chunk: dict) -> int | None:
        return self.learner.add(chunk)

    def inserts_allowed(self) -> int | None:
        return self.learner.inserts_allowed()

    def sync(self, known_version: int):
        return self.learner.sync(known_version)

    def report(self) -> dict:
        """The learner's numbers; `error` is set once its update loop has stopped on an exception."""
        report = self.learner.report()
        self._metrics.record(report)
        return {**report, "error": self.error}

    def save(self, directory: str) -> None:
        with self._pause:
            self.learner.save(directory)

    def load(self, directory: str) -> None:
        if self._thread is not None:
            raise RuntimeError("the learner is already training: load a checkpoint before it starts")
        self.learner.load(directory)

    def publish(self) -> None:
        with self._pause:
            self.learner.publish()

    def max_stream_id(self) -> int:
        return self.learner.replay.max_stream_id()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


@ray.remote
class EvaluatorActor:
    def __init__(self, config: Config):
        from envs.carla.server import launch_for
        from workers.assembly import build_evaluator, eval_env_config

        self._server = launch_for(eval_env_config(config))
        self.evaluator = build_evaluator(config, self._server)

    def evaluate(self, snapshot) -> tuple[dict, list[dict]]:
        """The metric table and the per-step records of the evaluation."""
        self.evaluator.set_policy(snapshot)
        return self.evaluator.evaluate(), self.evaluator.step_records()

    def close(self) -> None:
        try:
            self.evaluator.close()
        finally:
            if self._server is not None:
                self._server.stop()
