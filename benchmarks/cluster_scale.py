"""The runtime at cluster scale, simulated: the learner's ingest limit and the feedback service's
throughput as rollout workers grow, on a multi-node `ray.cluster_utils.Cluster` (JSON).

    .venv/bin/python benchmarks/cluster_scale.py [--workers 2 8 32] [--replicas 1 2 4] [--seconds 5]
        [--nodes 4] [--no-train]

The rollout workers are synthetic (benchmarks/synthetic_rollouts.py): rows of the real size (bev uint8
[15, 96, 96] with sparse masks, every ROW_SPEC field) made at ~zero compute, shipped to the real
`LearnerActor` with `WorkerActor`'s transport, reported to the real driver loop (the runtime skeleton's step);
feedback clients submit expert-advisor items through the real `FeedbackClient` + `serve_sender` to
the real Serve app (`feedback_app`). Every simulated node shares this machine's cores, so the
absolute rates are lower bounds; the CPU-seconds each role spends per transition or item (read from
/proc for every process of this cluster) are what carries over to a real cluster, and the
`extrapolation` section turns them into a 64-worker cluster's needs and its first bottleneck.

Measured, in one run:
  ingest: transitions/s the learner accepts from N workers shipping as fast as they can, with the
    learner idle (learning_starts never reached) and training (its update loop on a thread), the
    driver's step latency and CPU, and every role's CPU per transition;
  ingest_breakdown: Learner.add's parts (validate + replay copy, journal write, shaper) in this
    process, ray.put of a chunk, and the learner's report() (the driver polls it every step);
  feedback: items/s answered by 1, 2, 4 replicas for N clients, CPU per item of the replicas,
    the clients and Serve's controller, against the expert advisor called directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
from ray import serve
from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the project's root

from benchmarks.synthetic_rollouts import SyntheticFeedbackClient, SyntheticRows, SyntheticWorkerActor  # noqa: E402
from cluster.actors import LearnerActor  # noqa: E402
from cluster.feedback_service import APP_PREFIX, feedback_app  # noqa: E402
from cluster.transport import RayTransport  # noqa: E402
from configs.loader import CONFIG_DIR, load_config  # noqa: E402
from configs.schema import Config  # noqa: E402
from core.feedback import FeedbackItem  # noqa: E402
from dataset.rows import ROW_SPEC  # noqa: E402
from feedback.expert_advisor import ExpertAdvisor  # noqa: E402
from learners.bev_codec import pack_chunk, unpack_chunk  # noqa: E402
from learners.replay import validate_chunk  # noqa: E402
from runtimes.registry import load_mode  # noqa: E402
from runtimes.skeleton import Runtime  # noqa: E402

logger = logging.getLogger("benchmark")

SLOT = "rollout_slot"  # custom resource of the rollout nodes: one unit per rollout actor
LEARNER_SLOT = "learner_slot"  # the head node's: the learner lives there, as in ray_cluster.yaml
ROW_BYTES = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in ROW_SPEC.values())
_MB = 1024 * 1024


# ------------------------------------------------------------------------------------ the cluster


def start_cluster(nodes: int, slots_per_node: int, head_cpus: int) -> Cluster:
    """A head (learner, feedback replicas, Serve) and `nodes` rollout nodes of `slots_per_node`
    logical CPUs each, every node with its own raylet and object store."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": head_cpus,
            "resources": {LEARNER_SLOT: 1},
            "include_dashboard": False,
            "object_store_memory": 1024 * _MB,
        },
    )
    for _ in range(nodes):
        cluster.add_node(
            num_cpus=slots_per_node,
            resources={SLOT: slots_per_node},
            object_store_memory=max(300, 40 * slots_per_node) * _MB,
        )
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster


class ProcessCpu:
    """CPU seconds of every process of this cluster (this process and its descendants), by role,
    from /proc (utime + stime, all threads); the machine's busy cores from /proc/stat."""

    ROLES = (
        ("ray::LearnerActor", "learner"),
        ("ray::SyntheticWorkerActor", "workers"),
        ("ray::SyntheticFeedbackClient", "feedback_clients"),
        ("ray::ServeReplica", "feedback_replicas"),
        ("ray::ServeController", "serve_controller"),
        ("ray::ProxyActor", "serve_proxy"),
    )
    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, root: int | None = None):
        self.root = root or os.getpid()

    def sample(self) -> dict:
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = _read_stat(int(entry))
                if stat is not None:
                    stats[int(entry)] = stat
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        ours, todo = {}, [self.root]
        while todo:
            pid = todo.pop()
            if pid in stats:
                ours[pid] = (self._role(pid, stats[pid][1]), stats[pid][2])
                todo += children.get(pid, [])
        return {"time": time.monotonic(), "processes": ours, "machine": _machine_busy()}

    def _role(self, pid: int, comm: str) -> str:
        if pid == self.root:
            return "driver"
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return "ray_other"
        if comm == "gcs_server":
            return "gcs"
        if comm == "raylet":  # the head's raylet socket is named `raylet`, the added nodes' `raylet.<n>`
            return "raylet_head" if any(a.endswith("/sockets/raylet") for a in args) else "raylets_rollout_nodes"
        return next((role for prefix, role in self.ROLES if args[0].startswith(prefix)), "ray_other")

    def delta(self, before: dict, after: dict) -> dict:
        """Cores each role used between two samples (processes alive at both), and the machine's."""
        wall = after["time"] - before["time"]
        roles: dict[str, float] = {}
        for pid, (role, ticks) in after["processes"].items():
            if pid in before["processes"]:
                roles[role] = roles.get(role, 0.0) + (ticks - before["processes"][pid][1]) / self.TICK
        busy = (after["machine"][0] - before["machine"][0]) / max(after["machine"][1] - before["machine"][1], 1)
        return {
            "wall_s": wall,
            "cpu_s": {k: round(v, 3) for k, v in sorted(roles.items())},
            "cores_used_by_cluster": round(sum(roles.values()) / wall, 2),
            "machine_busy_cores": round(busy * (os.cpu_count() or 1), 2),
        }


def _read_stat(pid: int) -> tuple[int, str, int] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), comm, int(fields[11]) + int(fields[12])  # ppid, comm, utime + stime


def _machine_busy() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# --------------------------------------------------------------------------------------- configs


def scale_config(workers: int, train: bool, overrides: tuple[str, ...] = ()) -> Config:
    """The quickstart run (DrQ-v2 small, expert feedback) with the learner placed on the head."""
    return load_config(
        CONFIG_DIR / "quickstart.yaml",
        [
            f"workers.num_workers={workers}",
            f"workers.server_resource={SLOT}",
            "run.shutdown_ray=false",
            "run.total_env_steps=1000000",  # measured over seconds, not to a budget
            f"learner.learning_starts={1024 if train else 1 << 40}",
            *overrides,
        ],
    )


def _start_learner(config: Config, replay_dir: Path):
    learner = LearnerActor.options(num_cpus=1, resources={LEARNER_SLOT: 1}).remote(config, str(replay_dir), "cpu")
    ray.get(learner.report.remote(), timeout=300)
    return learner


# ---------------------------------------------------------------------------------------- ingest


class SyntheticTransport(RayTransport):
    """The real Ray transport, driven by the real runtime skeleton (budget, reports, learner polling),
    whose workers are synthetic actors from a pool started once (32 processes take minutes to start
    on 2 cores)."""

    def __init__(self, config: Config, learner, pool: list):
        super().__init__(config, load_mode("online"), learner, None)
        self.pool, self._started = pool, 0

    def start_worker(self, stream_id: int):
        actor = self.pool[self._started]
        self._started += 1
        actor.start.remote(self.config, stream_id, self.learner_actor)  # an actor runs its calls in order
        return actor

    def stop_workers(self, workers: list, calls: list, grace_s: float | None) -> list:
        """Each worker finishes its call and ships what it holds; the learner then counts all of it."""
        return [
            (([ray.get(call)] if call is not None else []) + [ray.get(worker.drain.remote())], True)
            for worker, call in zip(workers, calls)
        ]

    def close_workers(self, workers: list) -> None:
        """The pool's actors live on for the next measurement."""


def start_worker_pool(size: int) -> list:
    pool = [SyntheticWorkerActor.options(num_cpus=1, resources={SLOT: 1}).remote() for _ in range(size)]
    ray.get([actor.ready.remote() for actor in pool], timeout=900)
    return pool


def measure_ingest(
    config: Config, pool: list, seconds: float, run_dir: Path, cpu: ProcessCpu, warmup_timeout_s: float = 180.0
) -> dict:
    """The real driver loop over `workers.num_workers` synthetic workers of `pool` shipping to a fresh
    learner; the rate over `seconds` once every worker has reported once, then a drain and the counts."""
    workers = config.workers.num_workers
    runtime = Runtime(
        config, load_mode("online"), SyntheticTransport(config, _start_learner(config, run_dir / "replay"), pool)
    )
    try:
        started = time.monotonic()
        while len(runtime.worker_reports()) < workers and time.monotonic() - started < warmup_timeout_s:
            runtime.step()  # past the time-out the window starts anyway: `workers_reported` says how many had
        reported = len(runtime.worker_reports())
        first = ray.get(runtime.transport.learner_actor.report.remote())
        before, t0 = cpu.sample(), time.monotonic()
        step_s = []
        while time.monotonic() - t0 < seconds:
            begun = time.monotonic()
            runtime.step()
            step_s.append(time.monotonic() - begun)
        polled = time.monotonic()
        last = ray.get(runtime.transport.learner_actor.report.remote())
        report_s = time.monotonic() - polled
        after, t1 = cpu.sample(), time.monotonic()
        costs = cpu.delta(before, after)
        final = runtime.finish().metrics  # every worker drains: the learner holds all it shipped
        reports = list(runtime.worker_reports().values())
    finally:
        runtime.shutdown()
    transitions = last["env_steps"] - first["env_steps"]
    rate = transitions / (t1 - t0)
    per = {role: seconds_ / max(transitions, 1) * 1e6 for role, seconds_ in costs["cpu_s"].items()}
    return {
        "workers": workers,
        "workers_reported": reported,
        "learner_training": config.learner.learning_starts < 1 << 40,
        "transitions_per_s": round(rate, 1),
        "mb_per_s": round(rate * ROW_BYTES / _MB, 1),
        "updates_per_s": round((last["learner_updates"] - first["learner_updates"]) / (t1 - t0), 2),
        "driver_steps": len(step_s),
        "driver_step_s_median": round(float(np.median(step_s)), 4) if step_s else None,
        "driver_step_s_max": round(max(step_s), 4) if step_s else None,
        "learner_report_s": round(report_s, 4),
        "driver_cpu_ms_per_step": round(costs["cpu_s"].get("driver", 0.0) / max(len(step_s), 1) * 1e3, 2),
        "cpu_us_per_transition": {role: round(us, 1) for role, us in per.items()},
        "cpu": costs,
        "shipped_transitions": int(sum(r["shipped_transitions"] for r in reports)),
        "shipped_rows": int(sum(r["shipped_rows"] for r in reports)),
        "learner_transitions": int(final["env_steps"]),
        "learner_rows": int(final["replay_inserted_total"]),
    }


def ingest_breakdown(config: Config, run_dir: Path, chunks: int = 24) -> dict:
    """Learner.add's parts on chunks of workers.chunk_size rows, in this process (CPU microseconds
    per transition), ray.put of a chunk, and the learner's report() on its full replay."""
    from learners.learner import Learner

    learner = Learner(config, run_dir / "breakdown-replay", device="cpu")
    rows = SyntheticRows(0, config.workers.chunk_size, seed=0)
    made = [next_chunk(rows) for _ in range(chunks)]
    transitions = sum(int(np.count_nonzero(~c["is_last"])) for c in made)
    packed = [pack_chunk(c) for c in made]
    blocks = [unpack_chunk(p)[1] for p in packed]
    # Each part on every chunk; the worker's side (pack_chunk: LZ4 of the BEV) and the learner's
    # side (Learner.add's steps on a packed chunk), and what Ray's serialisation costs raw or packed.
    parts = {
        "worker_pack_chunk": lambda i: pack_chunk(made[i]),
        "ray_put_raw": lambda i: ray.put(made[i]),
        "ray_put_packed": lambda i: ray.put(packed[i]),
        "validate_chunk": lambda i: validate_chunk(made[i]),
        "replay_add": lambda i: learner.replay.add(made[i], bev_blocks=blocks[i]),
        "journal_append": lambda i: learner.journal.append(made[i], bev_blocks=blocks[i]),
        "shaper_observe": lambda i: learner.shaper.observe(made[i]),
    }
    result = {}
    for name, part in parts.items():
        started = time.process_time()
        for i in range(len(made)):
            part(i)
        result[name] = round((time.process_time() - started) / transitions * 1e6, 1)
    # the next steps of the stream, packed as a worker ships them
    fresh = [pack_chunk(next_chunk(rows)) for _ in range(chunks)]
    started = time.process_time()
    for chunk in fresh:
        learner.add(chunk)
    result["learner_add_total"] = round((time.process_time() - started) / transitions * 1e6, 1)
    while len(learner.replay) < learner.replay.capacity:  # a full ring, as report() sees it in a long run
        learner.replay.add(next_chunk(rows))
    started, repeats = time.process_time(), 20
    for _ in range(repeats):
        learner.report()
    report_s = (time.process_time() - started) / repeats
    return {
        "cpu_us_per_transition": result,
        "chunk_rows": config.workers.chunk_size,
        "chunk_mb": round(config.workers.chunk_size * ROW_BYTES / _MB, 2),
        "learner_report_ms": round(report_s * 1e3, 3),
        "replay_rows": len(learner.replay),
        "learner_report_ms_per_100k_rows": round(report_s * 1e3 / len(learner.replay) * 1e5, 3),
    }


def next_chunk(rows: SyntheticRows) -> dict:
    """The stream's next full chunk, as a copy."""
    while not rows.add_row(0):
        pass
    rows.filled = 0
    return {key: value.copy() for key, value in rows.chunk.items()}


# -------------------------------------------------------------------------------------- feedback


def expert_direct(bundle_steps: int, batches: int = 200) -> dict:
    """The expert advisor called in this process on batches of items as workers send them: the
    model's own cost, against which the replica's CPU per item shows Serve's."""
    actions = np.random.default_rng(0).uniform(-1, 1, (2 * bundle_steps, 2)).astype(np.float32)
    items = [
        FeedbackItem(0, i, ("vlm_action",), 4, 5.0, np.zeros(2, np.float32), privileged=action)
        for i, action in enumerate(actions)
    ]
    model = ExpertAdvisor()
    model(items)
    started = time.process_time()
    for _ in range(batches):
        model(items)
    per_item = (time.process_time() - started) / (batches * len(items))
    return {"cpu_us_per_item": round(per_item * 1e6, 2), "items_per_core_s": round(1 / per_item, 1)}


def measure_feedback(
    config: Config,
    replicas: int,
    client_counts: list[int],
    seconds: float,
    cpu: ProcessCpu,
    clients: list | None = None,
    warmup_s: float = 1.5,
) -> tuple[list[dict], list]:
    """Deploy the feedback app with `replicas` replicas (in place, under one app name) and drive it
    with each count of clients; returns the rows and the clients (reuse them for the next count)."""
    feedback = dataclasses.replace(config.feedback, replicas=replicas)
    app_name = f"{APP_PREFIX}-clusterscale-{os.getpid()}"
    handle = serve.run(feedback_app(feedback, config.run.seed, use_gpu=False), name=app_name, route_prefix=None)
    if clients is None:
        # A slot each, no CPU: Serve may place replicas on any node with a free CPU (its default spread).
        clients = [
            SyntheticFeedbackClient.options(num_cpus=0, resources={SLOT: 1}).remote(config, stream, handle)
            for stream in range(max(client_counts))
        ]
        ray.get([client.ready.remote() for client in clients], timeout=300)
    # After a (re)deploy every client's router must learn the new replicas first: without this the
    # first setting measured nothing (its calls were still blocked when the window closed).
    ray.get([client.run.remote(time.time(), 0.0, 1.0) for client in clients], timeout=300)
    rows = []
    for count in client_counts:
        start_at = time.time() + 0.5
        calls = [client.run.remote(start_at, warmup_s, seconds) for client in clients[:count]]
        time.sleep(max(0.0, start_at + warmup_s - time.time()))
        before = cpu.sample()
        time.sleep(seconds)
        after = cpu.sample()
        results = ray.get(calls)
        costs = cpu.delta(before, after)
        answered = sum(r["answered_in_window"] for r in results)
        client_cpu = sum(r["client_cpu_s_in_window"] for r in results)
        per_item = {role: round(s / max(answered, 1) * 1e6, 1) for role, s in costs["cpu_s"].items()}
        per_item["feedback_clients"] = round(client_cpu / max(answered, 1) * 1e6, 1)
        rows.append(
            {
                "replicas": replicas,
                "workers": count,
                "items_per_s": round(answered / seconds, 1),
                "cpu_us_per_item": per_item,
                "cpu": costs,
                "window_items_mean": round(float(np.mean([r["window_items"] for r in results])), 1),
                "sent": sum(r["sent"] for r in results),
                "answered": sum(r["answered"] for r in results),
                "failed_calls": sum(r["failed_calls"] for r in results),
                "unanswered": sum(r["unanswered"] for r in results),
            }
        )
    return rows, clients


def delete_feedback_app() -> None:
    serve.delete(f"{APP_PREFIX}-clusterscale-{os.getpid()}")


# --------------------------------------------------------------------------------- extrapolation


def extrapolate(
    ingest: list[dict],
    breakdown: dict,
    feedback: list[dict],
    direct: dict,
    config: Config,
    workers: int,
    steps_per_s: float,
) -> dict:
    """A `workers`-worker cluster at `steps_per_s` env steps per worker: what each role must do, what
    the measured per-item CPU says one process of it can do, and the first limit."""
    demand = workers * steps_per_s
    idle = [r for r in ingest if not r["learner_training"]]
    largest = max(idle, key=lambda r: r["workers"])
    learner_us = largest["cpu_us_per_transition"].get("learner", math.nan)
    # Learner.add runs under one lock in one process: one core at most, whatever max_concurrency says.
    learner_limit = 1e6 / learner_us
    reports_per_s = demand / config.workers.pull_weights_every_steps
    report_ms_full = breakdown["learner_report_ms_per_100k_rows"] * 150_000 / 1e5
    best_fb = max(feedback, key=lambda r: r["items_per_s"])
    replica_us = best_fb["cpu_us_per_item"].get("feedback_replicas", math.nan)
    client_us = best_fb["cpu_us_per_item"].get("feedback_clients", math.nan)
    limits = {
        "learner_ingest": {
            "need_per_s": demand,
            "one_process_limit_per_s": round(learner_limit),
            "load": round(demand / learner_limit, 2),
            "bytes_per_s_into_learner_mb": round(demand * ROW_BYTES / _MB),
        },
        "learner_report_polling": {
            "reports_per_s": reports_per_s,
            "learner_report_ms_at_150k_rows": round(report_ms_full, 2),
            "load": round(reports_per_s * report_ms_full / 1e3, 2),
        },
        "driver_loop": {
            "steps_per_s": reports_per_s,
            "driver_cpu_ms_per_step": largest["driver_cpu_ms_per_step"],
            "load": round(reports_per_s * largest["driver_cpu_ms_per_step"] / 1e3, 2),
        },
        "feedback_replicas": {
            "items_per_s": demand,
            "replica_cpu_us_per_item": replica_us,
            "model_cpu_us_per_item": direct["cpu_us_per_item"],
            "replicas_needed": math.ceil(demand * replica_us / 1e6),
            "load": round(demand * replica_us / 1e6 / config.feedback.replicas, 2),
            "load_is_for": f"feedback.replicas = {config.feedback.replicas}",
        },
        "feedback_client_per_worker": {
            "items_per_s": steps_per_s,
            "client_cpu_us_per_item": client_us,
            "load": round(steps_per_s * client_us / 1e6, 2),
        },
    }
    first = max(limits, key=lambda k: limits[k]["load"] if not math.isnan(limits[k]["load"]) else -1)
    return {
        "workers": workers,
        "env_steps_per_s_per_worker": steps_per_s,
        "transitions_per_s": demand,
        "limits": limits,
        "first_bottleneck": first,
        "note": "load = cores (or one process's capacity) needed / available; > 1 means it cannot keep up",
    }


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=4.0, help="measurement window per setting")
    parser.add_argument("--nodes", type=int, default=4, help="rollout nodes (the head holds learner and replicas)")
    parser.add_argument("--no-train", action="store_true", help="skip the learner-training ingest runs")
    parser.add_argument("--no-ingest", action="store_true", help="measure the feedback service only")
    parser.add_argument("--target-workers", type=int, default=64)
    parser.add_argument("--target-steps-per-s", type=float, default=300.0, help="env steps/s of one worker")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. workers.chunk_size=128")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load_before = os.getloadavg()
    slots = math.ceil(max(args.workers) / args.nodes)
    cluster = start_cluster(args.nodes, slots, head_cpus=2 + max(args.replicas))
    cpu = ProcessCpu()
    started = time.monotonic()
    try:
        pool = start_worker_pool(0 if args.no_ingest else max(args.workers))
        pool_started_s = time.monotonic() - started
        with tempfile.TemporaryDirectory(prefix="cluster-scale-") as tmp:
            ingest, breakdown = [], {}
            for train in () if args.no_ingest else (False,) if args.no_train else (False, True):
                for count in args.workers:
                    run_dir = Path(tmp) / f"run-{count}-{int(train)}"
                    ingest.append(
                        measure_ingest(
                            scale_config(count, train, tuple(args.overrides)), pool, args.seconds, run_dir, cpu
                        )
                    )
                    logger.warning("ingest %s", ingest[-1])
            if not args.no_ingest:
                breakdown = ingest_breakdown(scale_config(1, False, tuple(args.overrides)), Path(tmp))
        for actor in pool:
            ray.kill(actor)  # their slots go to the feedback clients
        config = scale_config(max(args.workers), False, tuple(args.overrides))
        feedback, clients = [], None
        for replicas in args.replicas:
            rows, clients = measure_feedback(config, replicas, args.workers, args.seconds, cpu, clients)
            feedback += rows
            logger.warning("feedback %s", rows)
        delete_feedback_app()
        direct = expert_direct(config.feedback.bundle_steps)
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(
        json.dumps(
            {
                "ingest": ingest,
                "ingest_breakdown": breakdown,
                "feedback": feedback,
                "expert_direct": direct,
                "extrapolation": extrapolate(
                    ingest, breakdown, feedback, direct, config, args.target_workers, args.target_steps_per_s
                )
                if ingest
                else None,
                "setting": {
                    "workers": args.workers,
                    "replicas": args.replicas,
                    "seconds": args.seconds,
                    "rollout_nodes": args.nodes,
                    "slots_per_node": slots,
                    "row_bytes": ROW_BYTES,
                    "chunk_rows": config.workers.chunk_size,
                    "bundle_steps": config.feedback.bundle_steps,
                    "shipped_bev": "LZ4 blocks (learners/bev_codec.pack_chunk)",
                    "overrides": args.overrides,
                    "worker_pool_start_s": round(pool_started_s, 1),
                    "total_s": round(time.monotonic() - started, 1),
                },
                "hardware": {
                    "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "ray": ray.__version__,
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                },
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
