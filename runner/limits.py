"""Limits that match the machine, checked at start: fields against each other and against the
memory and cores of the machine the run's processes will use.

`check_limits` (train.py's preflight) and `check_collection_limits` (collect.py) raise ConfigError
naming the field, the limit and the fix, before a run directory is made or Ray is started:

- a batch must fit the replay it is drawn from (learner.batch_size against learner.replay_capacity,
  and data.capacity where a dataset is used; a world model's batch is batch_size sequences of
  sequence_length rows);
- the host memory of the replay (from its row layout, learners/replay.py), the learner, the rollout
  workers and the feedback replicas must fit MEMORY_FRACTION of the machine, where this process
  starts the cluster itself (run.mode local or offline, or a local Ray cluster): a run that joins
  a cluster (run.ray_address, $RAY_ADDRESS, a `ray start` cluster on this machine) does not know
  its learner's node, so it is only warned;
- past MAX_PROCESSES_PER_CORE on a local Ray cluster, a warning says what the workers lose.

The per-process figures are measured (the comments say where and how); they are allowances, not
promises: a run near a limit can still be refused by Ray's own memory monitor.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from configs.loader import ConfigError
from configs.schema import Config

logger = logging.getLogger(__name__)

MIB = 1 << 20
GIB = 1 << 30

# ------------------------------------------------------------------------------------------ limits

# Fraction of the machine's physical memory a run may plan to use (1): the rest is for the OS, the
# page cache, other users of the machine and the working set of Ray's object store, and keeps the
# run below Ray's memory monitor, which kills tasks at 0.95 of the node's memory.
MEMORY_FRACTION = 0.8

# Bytes of one replay row's LZ4 BEV block (bytes): the p99 over 1,501 real Town01 steps (mean 1,391,
# max 2,990; docs/results.md "Replay memory"). A full replay holds the mean; the p99 leaves room for
# busier scenes (dense traffic) than the measured regular-traffic expert drive.
BEV_BLOCK_BYTES = 2_531
# Bytes a block costs beyond its data (bytes): CPython's bytes header plus glibc malloc's chunk
# header and 16-byte rounding (blocks are over pymalloc's 512-byte limit).
BEV_BLOCK_OVERHEAD_BYTES = sys.getsizeof(b"") + 16

# Private (unshared) memory of one process of each role, measured with /proc/PID/smaps_rollup
# (Private_Clean + Private_Dirty) at the peak of a quickstart + debug run on a local Ray cluster
# (Town01, regular traffic, 2 workers, 2,500 env steps, 2-core VM, 2026-12-07), rounded up:
#   rollout worker actor (SUMO in-process, torch, the DrQ-v2 policy): 302-304 MiB (RSS 615 MiB);
#   feedback replica (expert advisor): 117 MiB; Serve's controller and proxy: 115 + 113 MiB;
#   learner actor at batch 8 (replay of 5,000 rows): 312 MiB; the driver (train.py): 259 MiB;
#   Ray's daemons (GCS, raylet, dashboard and its heads, agents, monitors): 723 MiB together.
# A process's libraries (torch, numpy, SUMO, Ray: ~300 MiB of shared, clean pages) are counted once.
WORKER_BYTES = 350 * MIB  # per rollout worker process (MiB): 304 measured, + growth over a long run
REPLICA_BYTES = 150 * MIB  # per feedback replica (MiB): 117 with the expert advisor; a CLIP or VLM more
SERVE_BYTES = 250 * MIB  # Serve's controller and proxy, when there is feedback (MiB): 228 measured
LEARNER_BYTES = 350 * MIB  # the learner's process without its replay and batch (MiB): 312 measured
DRIVER_BYTES = 300 * MIB  # train.py / collect.py itself (MiB): 259 measured (264 for collect.py)
RAY_DAEMON_BYTES = 800 * MIB  # a local Ray cluster's own processes (MiB): 723 measured
LIBRARY_BYTES = 320 * MIB  # shared library pages, once per machine (MiB): a worker's Shared_Clean, 318
# Each extra environment in run.mode local (MiB): a SUMO server over TraCI (59 MiB RSS) and the
# environment's Python side (~20 MiB), measured by building 3 workers in one process.
LOCAL_ENV_BYTES = 100 * MIB
# Host memory of one batch sample during a CPU update (bytes): the learner's RSS after 10 updates
# grew 2.8 MB a sample between batch 32 (543 MB) and 256 (1,172 MB): DrQ-v2, small network, on
# two BEVs a sample (the observation and the n-step one). A sequence row (world models) holds one
# BEV: half of it is assumed there (not measured). On a GPU the activations are in GPU memory.
BATCH_SAMPLE_BYTES = 2_800_000
SEQUENCE_ROW_BYTES = BATCH_SAMPLE_BYTES // 2

# Busy processes per core (workers, learner, replicas) past which a local Ray cluster is warned
# about (processes/core): each then gets under 25 % of a core, so a worker's step, ~17 ms of CPU
# (docs/results.md, "The feedback path": 17.2 CPU ms a step), takes over 69 ms, and a bundle of 32
# feedback items (feedback.bundle_steps) over 2.2 s to fill: close to feedback.max_pending_age_s
# (2.5 s), past which the worker stops to wait for its answers, with feedback.deadline_s (5 s) next.
MAX_PROCESSES_PER_CORE = 4
WORKER_STEP_CPU_S = 0.0172  # CPU seconds of one rollout worker step (s), as above


# --------------------------------------------------------------------------------------- the machine


@dataclass(frozen=True)
class Machine:
    """What the run's processes share: physical memory (bytes), cores, and whether a CUDA GPU is
    there (a GPU learner keeps its batch in GPU memory)."""

    memory_bytes: int
    cores: int
    has_gpu: bool = False

    @classmethod
    def this_one(cls) -> Machine:
        """This machine: its physical memory (or its cgroup's limit, when lower) and its cores as Ray
        counts them (os.cpu_count(), which cluster/launch.py sizes a local cluster by)."""
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return cls(min(memory, _cgroup_memory_limit() or memory), os.cpu_count() or 1, _has_cuda())


def _cgroup_memory_limit() -> int | None:
    """The memory limit of this process's cgroup (v2, then v1), if any."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def starts_own_cluster(config: Config) -> bool:
    """Whether every process of the run is on this machine: local and offline modes, or a Ray
    cluster that this process starts (the same rule as cluster/launch.py's _local_resources)."""
    if config.run.mode != "ray":
        return True
    if config.run.ray_address is not None:
        return config.run.ray_address == "local"
    if os.environ.get("RAY_ADDRESS"):
        return False
    return not ray_cluster_running_here()  # a `ray start` cluster here: ray.init joins it


def ray_cluster_running_here() -> bool:
    """Whether a raylet runs on this machine (what ray.init() without an address would join), read
    the way Ray's own ray._private.services.find_gcs_addresses reads it (a raylet's command line with
    --gcs-address), from /proc, without importing ray. False where there is no /proc."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended, or is not ours to read
            continue
        if args and args[0].endswith(b"raylet") and any(a.startswith(b"--gcs-address=") for a in args):
            return True
    return False


# ----------------------------------------------------------------------------------- cross-field rules


def batch_rows(config: Config) -> tuple[int, str]:
    """Rows one batch needs stored in a replay, and what they are: batch_size transitions, or
    batch_size sequences of sequence_length rows for an agent that replays sequences."""
    size = config.learner.batch_size
    length = getattr(config.agent.params, "sequence_length", None)
    if length is None:
        return size, f"learner.batch_size = {size}"
    return size * length, (
        f"learner.batch_size x agent.{config.agent.algorithm}.sequence_length = "
        f"{size} x {length} = {size * length} rows"
    )


def cross_field_problems(config: Config) -> list[str]:
    """A batch against the replays it is drawn from, and a chunk against the replay it goes into."""
    problems = []
    rows, what = batch_rows(config)
    lower = "lower learner.batch_size" + ("" if rows == config.learner.batch_size else " or the sequence length")
    if config.run.mode != "offline" and rows > config.learner.replay_capacity:
        problems.append(
            f"{what} is larger than learner.replay_capacity = {config.learner.replay_capacity}: a batch "
            f"is drawn from the replay and no update could ever run; {lower} or raise "
            "learner.replay_capacity"
        )
    if config.data.dataset and rows > config.data.capacity:
        problems.append(
            f"{what} is larger than data.capacity = {config.data.capacity}: the dataset's batch is "
            f"drawn from its replay of data.capacity rows; {lower} or raise data.capacity"
        )
    if config.run.mode != "offline" and config.workers.chunk_size > config.learner.replay_capacity:
        problems.append(
            f"workers.chunk_size = {config.workers.chunk_size} is larger than learner.replay_capacity = "
            f"{config.learner.replay_capacity}: the replay refuses a chunk larger than itself; lower "
            "workers.chunk_size or raise learner.replay_capacity"
        )
    return problems


def warn_no_updates(config: Config) -> None:
    """An online run whose env-step budget ends before its first update: allowed (benchmarks hold the
    policy fixed this way), but said."""
    run, learner = config.run, config.learner
    if run.mode == "offline" or config.data.dataset or not run.total_env_steps or run.total_updates:
        return
    first = max(learner.learning_starts, batch_rows(config)[0])
    if first > run.total_env_steps:
        logger.warning(
            "this run makes no update: the first needs %d env steps (learner.learning_starts = %d, a "
            "batch of %s) and run.total_env_steps = %d; lower them or raise run.total_env_steps",
            first,
            learner.learning_starts,
            batch_rows(config)[1],
            run.total_env_steps,
        )


# ------------------------------------------------------------------------------------------- memory

# What a row of a replay costs before anything is stored (bytes): its next_row link (int64) and its
# BEV block slot (a pointer) are written at construction (np.full); the other arrays are np.zeros,
# whose pages are mapped as they fill. An offline run's online replay stays this empty.
EMPTY_ROW_BYTES = np.dtype(np.int64).itemsize + np.dtype(object).itemsize


def _row_bytes(spec) -> int:
    """Bytes of one row of fields given as (shape, dtype) pairs."""
    return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in spec)


def replay_row_bytes() -> int:
    """Host bytes of one stored replay row: the preallocated arrays of every field but the BEV, the
    next_row link, the slot of the BEV block array, and the block with BEV_BLOCK_BYTES of data."""
    from dataset.rows import ARRAY_KEYS, ROW_SPEC

    return (
        _row_bytes(ROW_SPEC[key] for key in ARRAY_KEYS) + EMPTY_ROW_BYTES + BEV_BLOCK_OVERHEAD_BYTES + BEV_BLOCK_BYTES
    )


@dataclass(frozen=True)
class MemoryPlan:
    """Host memory (bytes) a run's processes hold at once on one machine, by part."""

    fixed: int  # shared libraries, Ray's daemons, the driver, Serve, the learner's own process
    batch: int = 0  # one update's batch (CPU learners)
    replay: int = 0  # the online replay
    offline_replay: int = 0  # the dataset's replay (data.capacity rows)
    per_worker: int = 0
    workers: int = 0  # beyond any counted in `fixed`
    per_replica: int = 0
    replicas: int = 0

    @property
    def roles(self) -> int:
        return self.per_worker * self.workers + self.per_replica * self.replicas

    @property
    def total(self) -> int:
        return self.fixed + self.batch + self.replay + self.offline_replay + self.roles


def feedback_replicas(config: Config) -> int:
    """Serve replicas the run starts (none when feedback is off or has no model)."""
    f = config.feedback
    return f.replicas if f.mode != "off" and f.model != "none" else 0


def batch_bytes(config: Config, machine: Machine) -> int:
    """One update's batch in host memory: CPU learners only (a GPU holds its activations)."""
    lc = config.learner
    if lc.device.startswith("cuda") or (lc.device == "auto" and machine.has_gpu):
        return 0
    rows, _ = batch_rows(config)
    return rows * (BATCH_SAMPLE_BYTES if rows == lc.batch_size else SEQUENCE_ROW_BYTES)


def training_plan(config: Config, machine: Machine) -> MemoryPlan:
    """What train.py's run holds at once (the evaluator starts after the workers have stopped).
    run.mode ray: a process per worker and replica; local: one process, whose first environment and
    policy are counted with the learner and each further environment is a SUMO server; offline:
    the learner alone."""
    mode, lc = config.run.mode, config.learner
    row = replay_row_bytes()
    plan = MemoryPlan(
        fixed=LIBRARY_BYTES + LEARNER_BYTES,
        batch=batch_bytes(config, machine),
        replay=lc.replay_capacity * (EMPTY_ROW_BYTES if mode == "offline" else row),
        offline_replay=config.data.capacity * row if config.data.dataset else 0,
    )
    if mode == "local":
        return dataclasses.replace(
            plan, fixed=plan.fixed + WORKER_BYTES, per_worker=LOCAL_ENV_BYTES, workers=config.workers.num_workers - 1
        )
    if mode == "ray":
        replicas = feedback_replicas(config)
        return dataclasses.replace(
            plan,
            fixed=plan.fixed + DRIVER_BYTES + RAY_DAEMON_BYTES + (SERVE_BYTES if replicas else 0),
            per_worker=WORKER_BYTES,
            workers=config.workers.num_workers,
            per_replica=REPLICA_BYTES,
            replicas=replicas,
        )
    return plan


def gib(n: float) -> str:
    return f"{n / GIB:,.1f} GiB"


def budget(machine: Machine) -> int:
    """The bytes a run may plan to hold on `machine`."""
    return int(MEMORY_FRACTION * machine.memory_bytes)


def _over(machine: Machine) -> str:
    return f"more than {MEMORY_FRACTION:.0%} of this machine's {gib(machine.memory_bytes)} ({gib(budget(machine))})"


def memory_problem(config: Config, plan: MemoryPlan, machine: Machine) -> str | None:
    """None when the plan fits; else a message naming the field of its largest part (the replays,
    the batch, or the workers and replicas) and the largest value that fits with the rest as it is."""
    if plan.total <= budget(machine):
        return None
    parts = {
        _replay_problem: plan.replay,
        _offline_replay_problem: plan.offline_replay,
        _batch_problem: plan.batch,
        _roles_problem: plan.roles,
    }
    worst = max(parts, key=parts.get)
    return worst(config, plan, machine, budget(machine) - (plan.total - parts[worst]))


def _capacity_text(field: str, capacity: int, need: int, room: int, machine: Machine) -> str:
    per_row = need // capacity
    row = (
        f"~{per_row:,} bytes a row: {per_row - BEV_BLOCK_BYTES} of fixed-size fields and a BEV block allowance "
        f"of {BEV_BLOCK_BYTES:,}, the p99 of real Town01 BEVs"
        if per_row > EMPTY_ROW_BYTES
        else f"{per_row} bytes a row even unused, as in an offline run"
    )
    return (
        f"{field} = {capacity} rows need ~{gib(need)} of host memory ({row}); with the rest of the run that is "
        f"{_over(machine)}; lower {field} to at most {max(0, room) // per_row:,}"
    )


def _replay_problem(config: Config, plan: MemoryPlan, machine: Machine, room: int) -> str:
    return _capacity_text("learner.replay_capacity", config.learner.replay_capacity, plan.replay, room, machine)


def _offline_replay_problem(config: Config, plan: MemoryPlan, machine: Machine, room: int) -> str:
    return _capacity_text("data.capacity", config.data.capacity, plan.offline_replay, room, machine)


def _batch_problem(config: Config, plan: MemoryPlan, machine: Machine, room: int) -> str:
    rows, what = batch_rows(config)
    per_row, per_sample = plan.batch // rows, plan.batch // config.learner.batch_size
    return (
        f"{what}: a CPU update holds ~{per_row / 1e6:.1f} MB of host memory a "
        f"{'sample' if rows == config.learner.batch_size else 'row'} (measured: DrQ-v2, small network), "
        f"~{gib(plan.batch)} in all; with the replay and the run's processes that is {_over(machine)}; "
        f"lower learner.batch_size to at most {max(0, room) // per_sample:,}, or learn on a GPU"
    )


def _roles_problem(config: Config, plan: MemoryPlan, machine: Machine, room: int) -> str:
    workers, counted = config.workers.num_workers, config.workers.num_workers - plan.workers
    each = "a process of ~" if config.run.mode == "ray" else "beyond the first, a SUMO server and state of ~"
    replicas = (
        f" and feedback.replicas = {plan.replicas} (~{plan.per_replica / MIB:,.0f} MiB each)" if plan.replicas else ""
    )
    text = (
        f"workers.num_workers = {workers} rollout workers (each {each}{plan.per_worker / MIB:,.0f} MiB)"
        f"{replicas} need ~{gib(plan.roles)}; with the learner, its replay and the rest of the run that is "
        f"{_over(machine)}"
    )
    most = (room - plan.per_replica * plan.replicas) // plan.per_worker + counted
    if most >= 1:
        cores = max(1, MAX_PROCESSES_PER_CORE * machine.cores - (busy_processes(config) - workers))
        hint = (
            f" (at most {cores} keep within {MAX_PROCESSES_PER_CORE} busy processes a core of its {machine.cores})"
            if config.run.mode == "ray" and cores < most
            else ""
        )
        return f"{text}; lower workers.num_workers to at most {most}{hint}"
    one = plan.per_worker * (1 - counted)  # a single worker beyond those counted in `fixed`
    if plan.replicas and room - one >= plan.per_replica:
        return (
            f"{text}; lower feedback.replicas to at most {(room - one) // plan.per_replica} (with "
            "workers.num_workers = 1)"
        )
    return f"{text}; not even one fits: lower learner.replay_capacity or learner.batch_size first"


# ------------------------------------------------------------------------------------------- cores


def busy_processes(config: Config) -> int:
    """Processes of a Ray run that keep a core busy: the learner, each worker, each replica's CPUs
    (the logical CPUs cluster/launch.py's resources_needed asks for)."""
    return 1 + config.workers.num_workers + feedback_replicas(config) * config.feedback.replica_cpus


def oversubscription_warning(config: Config, machine: Machine) -> str | None:
    """Past MAX_PROCESSES_PER_CORE busy processes a core: what a worker's step and, with feedback, a
    bundle of feedback items then take; None below it."""
    processes = busy_processes(config)
    per_core = processes / machine.cores
    if per_core <= MAX_PROCESSES_PER_CORE:
        return None
    step_s = WORKER_STEP_CPU_S * per_core
    others = processes - config.workers.num_workers
    text = (
        f"workers.num_workers = {config.workers.num_workers} with the learner and the feedback replicas "
        f"({others} CPU(s)) make {processes} busy processes on {machine.cores} core(s), {per_core:.1f} a core "
        f"(more than {MAX_PROCESSES_PER_CORE}): each gets {100 / per_core:.0f} % of a core, so a worker's step "
        f"(~{WORKER_STEP_CPU_S * 1e3:.1f} ms of CPU) takes ~{step_s * 1e3:.0f} ms"
    )
    f = config.feedback
    if feedback_replicas(config):
        text += (
            f" and a bundle of feedback.bundle_steps = {f.bundle_steps} items ~{f.bundle_steps * step_s:.1f} s "
            f"to fill (against feedback.max_pending_age_s = {f.max_pending_age_s:g} s, past which the worker "
            f"waits, and feedback.deadline_s = {f.deadline_s:g} s, past which items ship unanswered)"
        )
    return (
        f"{text}; for at most {MAX_PROCESSES_PER_CORE} a core use workers.num_workers <= "
        f"{max(1, MAX_PROCESSES_PER_CORE * machine.cores - others)}"
    )


# -------------------------------------------------------------------------------------- entry points


def check_limits(config: Config, machine: Machine | None = None) -> None:
    """train.py's checks: raises ConfigError naming the field, the limit and the fix; logs warnings.
    `machine` None: this machine where the run starts its own cluster; a run that joins one (its
    learner's node unknown here) is only warned, as if its nodes were like this one."""
    problems = cross_field_problems(config)
    if problems:
        raise ConfigError("; ".join(problems))
    warn_no_updates(config)
    local = machine is not None or starts_own_cluster(config)
    machine = machine or Machine.this_one()
    problem = memory_problem(config, training_plan(config, machine), machine)
    if problem and local:
        raise ConfigError(problem)
    if problem:
        logger.warning(
            "joining a Ray cluster whose learner node is not known here; were it like this machine: %s", problem
        )
    warning = oversubscription_warning(config, machine) if local and config.run.mode == "ray" else None
    if warning:
        logger.warning("%s", warning)


# Copies of a collector's buffered rows at a flush (1): the buffer and its concatenation.
SINK_COPIES = 2


def sink_bytes(config: Config) -> int:
    """A collector's Parquet sink at its fullest: up to _MAX_BUFFERED_SHARDS shards of
    collect.rows_per_shard raw rows (the RGB BEV included) before it must write, SINK_COPIES over."""
    from dataset.parquet import _MAX_BUFFERED_SHARDS
    from dataset.rows import ROW_SPEC
    from dataset.schema import EXTRA_SPEC

    raw_row = _row_bytes([*ROW_SPEC.values(), *EXTRA_SPEC.values()])
    return SINK_COPIES * _MAX_BUFFERED_SHARDS * config.collect.rows_per_shard * raw_row


def collection_plan(config: Config) -> MemoryPlan:
    """What collect.py holds at once: collectors (a worker and its sink each) and, on Ray, the
    daemons; in run.mode local the first collector is in the driver's process."""
    sink, workers = sink_bytes(config), config.workers.num_workers
    if config.run.mode == "ray":
        return MemoryPlan(
            fixed=LIBRARY_BYTES + DRIVER_BYTES + RAY_DAEMON_BYTES, per_worker=WORKER_BYTES + sink, workers=workers
        )
    return MemoryPlan(fixed=LIBRARY_BYTES + WORKER_BYTES + sink, per_worker=LOCAL_ENV_BYTES + sink, workers=workers - 1)


def check_collection_limits(config: Config, machine: Machine | None = None) -> None:
    """collect.py's checks (a collection has no feedback and no learner): the collectors' memory, and
    on a Ray cluster that collect.py starts (one logical CPU a core, cluster/launch.py) no more
    collectors than cores: each holds its CPU for its whole life, so one more is never scheduled
    and the collection waits for its share of the steps for ever (seen: 3 collectors on 2 cores
    stopped at 200 of 600 steps)."""
    if machine is None and not starts_own_cluster(config):
        return
    machine = machine or Machine.this_one()
    workers = config.workers.num_workers
    if config.run.mode == "ray" and workers > machine.cores:
        raise ConfigError(
            f"workers.num_workers = {workers} collectors on the local Ray cluster collect.py starts, "
            f"which has {machine.cores} CPUs (one a core): each collector holds one for its whole life, "
            f"so {workers - machine.cores} would never start and the collection would wait for their "
            f"steps for ever; lower workers.num_workers to at most {machine.cores}, or start a cluster "
            f"with `ray start --head --num-cpus={workers}` and set run.ray_address=auto"
        )
    problem = _collection_problem(config, collection_plan(config), machine)
    if problem:
        raise ConfigError(problem)


def _collection_problem(config: Config, plan: MemoryPlan, machine: Machine) -> str | None:
    if plan.total <= budget(machine):
        return None
    sink, rows = sink_bytes(config), config.collect.rows_per_shard
    one = plan.fixed + (plan.per_worker if config.run.mode == "ray" else 0)
    if one > budget(machine):
        most = max(16, rows * (budget(machine) - (one - sink)) // sink)
        return (
            f"collect.rows_per_shard = {rows}: a collector buffers up to {gib(sink)} of raw rows (RGB BEV "
            f"included) before it writes a shard; with the rest of the collection that is {_over(machine)}; "
            f"lower collect.rows_per_shard to at most {most:,}"
        )
    most = (budget(machine) - plan.fixed) // plan.per_worker + config.workers.num_workers - plan.workers
    return (
        f"workers.num_workers = {config.workers.num_workers} collectors (~{gib(plan.per_worker)} each with the "
        f"shard buffer of collect.rows_per_shard = {rows} rows) need ~{gib(plan.roles)}; with the rest of the "
        f"collection that is {_over(machine)}; lower workers.num_workers to at most {max(1, most)}, or "
        "collect.rows_per_shard"
    )
