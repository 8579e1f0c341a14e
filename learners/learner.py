"""The Learner: owns the replay buffer and the agent, updates at the configured sample-to-insert
ratio, publishes acting weights every N updates, checkpoints and resumes.

Bookkeeping only: the agent says what it samples (agent.batch) and does the gradient step; the
mathematics lives in learners/losses and the agent's files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import platform
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from configs.schema import Config
from core import CannotStart, DatasetSource, PolicySnapshot
from learners.bev_codec import encode_rows, is_packed, unpack_chunk
from learners.pacing import SampleToInsertRatio
from learners.registry import make_agent
from learners.replay import ReplayBuffer, validate_chunk
from learners.replay_journal import ReplayJournal
from learners.reward_shaping import RewardShaper
from learners.warm_start import warm_start

logger = logging.getLogger(__name__)

AGENT_FILE, STATE_FILE = "agent.pt", "learner.json"


class LearnerDiverged(RuntimeError):
    """An update produced non-finite losses or weights; the message names the update and the terms."""


def resolve_device(name: str) -> str:
    if name == "auto":
        if not torch.cuda.is_available():
            return "cpu"  # also where Ray granted a logical GPU on a machine without one
        return "cuda"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"learner.device = {name!r} but no CUDA device is visible; use auto or cpu")
    return name


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEPT_FREE_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks for reuse instead of handing them back to the kernel.

    glibc serves every block over 32 MB with its own mmap and unmaps it on free (a limit mallopt
    cannot raise), so a CPU update's large temporaries (the float BEV batch, oneDNN's reordered conv
    input: ~35 MB each at batch 64, small network) were page-faulted in anew on every update: more
    than half of an update's time (benchmarks/learner_throughput.py). Taking them from the heap and
    keeping up to KEPT_FREE_BYTES freed there removes that; the process keeps its peak working set.
    Process-wide, like MALLOC_MMAP_MAX_=0; returns False (nothing changed) where libc is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES) == 1
    except (OSError, AttributeError):
        return False
    if not done:
        logger.warning("mallopt refused the learner's allocator settings: CPU updates stay slower")
    return done


# What one update's time is spent on (Learner.phase_times): waiting for the replay's lock (`add` runs on
# another thread), drawing and shaping the batch, the agent's gradient step, copying the acting weights out.
PHASES = ("lock", "sample", "update", "publish")


class PhaseTimer:
    """Cumulative seconds per named phase, read from `clock`: time.perf_counter (wall time, the default)
    or time.process_time (the process's CPU time, what benchmarks/learner_throughput.py compares on a CPU).

    One clock read per phase boundary and a dict addition: ~0.26 us a lap with perf_counter, ~1.8 us with
    process_time (a system call); an update reads the clock 4 times (~1 us; ~7 us with process_time)
    against 2-200 ms for the update itself. On a GPU no sync is needed: the agent's update ends with a
    device-to-host copy of its metrics and publishing with one of the weights, so each phase's kernels
    are done when its lap is read."""

    def __init__(self, phases: Iterable[str], clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.seconds = dict.fromkeys(phases, 0.0)  # every key from the start: readers never see it grow

    def lap(self, phase: str, since: float) -> float:
        """Add clock() - since to `phase`; returns that clock() reading, where the next phase starts."""
        now = self.clock()
        self.seconds[phase] += now - since
        return now

    def reset(self) -> None:
        for phase in self.seconds:
            self.seconds[phase] = 0.0


class Learner:
    """`replay_dir` holds the replay's journal (learners/replay_journal.py): a run's own directory.
    `phase_clock` times the update's phases (phase_times(); PhaseTimer says which clocks fit)."""

    def __init__(
        self,
        config: Config,
        replay_dir: str | Path,
        device: str = "auto",
        phase_clock: Callable[[], float] = time.perf_counter,
    ):
        self.config = config
        self.device = resolve_device(device if device != "auto" else config.learner.device)
        if config.learner.torch_threads:
            torch.set_num_threads(config.learner.torch_threads)
        self.agent = make_agent(config.agent, device=self.device, seed=config.run.seed)
        if config.agent.init_from:
            try:
                warm_start(self.agent, config.agent.init_from)
            except (FileNotFoundError, ValueError) as err:
                raise CannotStart(str(err)) from err
        self.replay = ReplayBuffer(config.learner.replay_capacity, seed=config.run.seed)
        # The dataset's rows (data.dataset), never journaled: they are re-read from the dataset.
        self.offline: ReplayBuffer | None = None
        self.offline_only = config.run.mode == "offline"
        if config.data.dataset:
            self.load_dataset(_open_dataset(config), config.data.dataset)
        self._check_labels()
        self.journal = ReplayJournal(replay_dir)
        self._loaded = False
        self.shaper = RewardShaper(config.learner.clip_reward_scale, config.learner.semantic_reward_scale)
        lc = config.learner
        self.ratio = SampleToInsertRatio(lc.samples_per_insert, lc.batch_size, lc.learning_starts, lc.max_insert_lead)
        self.updates = 0
        self.version = 0
        self._published = PolicySnapshot(0, self.agent.policy_weights())
        self._lock = threading.Lock()  # `add` may run on another thread than `train`
        self._lag_sum, self._lag_count = 0.0, 0
        self.last_metrics: dict[str, float] = {}
        self._started = time.monotonic()
        self._updates_at_start = 0
        self._phases = PhaseTimer(PHASES, phase_clock)
        self._updates_at_phase_reset = 0
        if self.device == "cpu":
            keep_freed_memory()

    def load_dataset(self, source: DatasetSource, description: str) -> None:
        """Fill the offline replay from a dataset (before any update)."""
        started = time.monotonic()
        with _dataset_errors_stop_the_start():
            capacity = min(self.config.data.capacity, max(source.rows(), 16))
            self.offline = ReplayBuffer(capacity, seed=self.config.run.seed + 1)
            for chunk in source.chunks():
                for begin in range(0, len(chunk["step"]), capacity):
                    self.offline.add({key: value[begin : begin + capacity] for key, value in chunk.items()})
        if self.offline.transitions_total == 0:
            raise CannotStart(f"data.dataset {description} holds no transitions")
        logger.info(
            "offline replay: %d rows (%d transitions) from %s in %.1f s",
            len(self.offline),
            self.offline.transitions_total,
            description,
            time.monotonic() - started,
        )

    def _check_labels(self) -> None:
        """The labels the agent's objective needs (agent.required_labels, e.g. VL-SAFE's safety) must
        come from the dataset or from the feedback the workers ask for."""
        for label in self.agent.required_labels:
            if self.offline is not None and self.offline.stats()[f"feedback_{label}"] > 0:
                continue
            if not self.offline_only and label in self.config.feedback.wanted:
                continue
            where = (
                f"data.dataset {self.config.data.dataset} has no {label!r} column values ({label}_mask is 0 on "
                f"every row): label it first with `python -m cluster.label {self.config.data.dataset} --model clip`"
                if self.offline is not None
                else f"the workers do not ask for it: add {label} to feedback.wanted with a feedback.model that "
                "answers it (clip, expert+clip, vlm+clip)"
            )
            raise CannotStart(
                f"agent {self.config.agent.algorithm} needs the {label!r} label for its objective, but "
                f"{where}; or train without it (agent.vlsafe.safety_weighting=none)"
            )

    def check_can_start(self) -> None:
        """A journal that already holds rows belongs to a run that must be resumed, not overwritten."""
        if not self._loaded and (self.journal.segments or self.journal.chunks_written):
            raise CannotStart(
                f"{self.journal.directory} already holds a replay journal "
                f"({self.journal.chunks_written} chunks): resume that run with train.py --resume, "
                "or start a new run in a new directory"
            )

    # ----- data in ---------------------------------------------------------------------------
    def add(self, chunk: dict) -> int | None:
        """Insert a chunk of rows; returns how many more transitions the ratio lets the workers
        insert before they must wait for the learner (None: no limit)."""
        # The BEV as LZ4 blocks, for the replay and the journal alike: encoded by a Ray worker before it
        # shipped the chunk (bev_codec.pack_chunk), or here, outside the lock. A bad chunk is refused,
        # naming the field, before anything is written: by replay.add, and a raw one before encoding.
        if is_packed(chunk):
            chunk, bev_blocks = unpack_chunk(chunk)
            validate_chunk(chunk, bev_blocks)  # the blocks' CRC-32s too, before the journal takes them
        else:
            validate_chunk(chunk)
            bev_blocks = encode_rows(chunk["bev"])
        with self._lock:
            # The journal first: a write that fails (a full disk) leaves the replay as the journal has it,
            # and the worker, whose call fails, knows the rows were not taken.
            self.journal.append(chunk, bev_blocks=bev_blocks)  # acknowledged rows are on disk: they survive the learner
            self.replay.add(chunk, bev_blocks=bev_blocks)
            self.journal.prune(self.replay.inserted_total, self.replay.capacity)
            self.shaper.observe(chunk)
        transitions = ~chunk["is_last"]
        if transitions.any():
            self._lag_sum += float(np.sum(self.version - chunk["policy_version"][transitions]))
            self._lag_count += int(transitions.sum())
        return self.inserts_allowed()

    def inserts_allowed(self) -> int | None:
        return self.ratio.inserts_allowed(self.env_steps, self.updates)

    @property
    def env_steps(self) -> int:
        """The run's global clock: transitions inserted so far."""
        return self.replay.transitions_total

    # ----- updates ---------------------------------------------------------------------------
    def updates_allowed(self) -> int:
        """Updates the ratio allows now (0 before learning starts or while the batch cannot be drawn)."""
        batch_size = self.config.learner.batch_size
        if self.offline_only:
            return 1 << 30 if self.agent.batch.can_sample(self.offline, batch_size) else 0
        allowed = self.ratio.updates_allowed(self.env_steps, self.updates)
        if allowed == 0 or not (
            self.agent.batch.can_sample(self.replay, batch_size)
            or (self.offline is not None and self.agent.batch.can_sample(self.offline, batch_size))
        ):
            return 0
        return allowed

    def train(self, max_updates: int | None = None) -> int:
        """Run the updates the ratio allows (at most max_updates); returns how many ran."""
        done = 0
        while (max_updates is None or done < max_updates) and self.updates_allowed() > 0:
            self.update()
            done += 1
        return done

    def update(self) -> dict[str, float]:
        """One gradient step on a batch from the replay; publishes every learner.publish_every_updates."""
        phases = self._phases
        waiting = phases.clock()
        with self._lock:
            sampling = phases.lap("lock", waiting)
            batch, shaping = self._sample()
            stepping = phases.lap("sample", sampling)
        metrics = self.agent.update(batch, step=self.env_steps) | shaping
        phases.lap("update", stepping)
        bad = sorted(name for name, value in metrics.items() if not np.isfinite(value))
        if bad:
            raise LearnerDiverged(
                f"update {self.updates + 1} (at {self.env_steps} env steps) gave non-finite "
                f"{', '.join(f'{name}={metrics[name]}' for name in bad)}; the weights published "
                f"last (policy v{self.version}) are the last good ones"
            )
        self.updates += 1
        if self.updates % self.config.learner.publish_every_updates == 0:
            self.publish()
        self.last_metrics = metrics
        return metrics

    def _sample(self) -> tuple[dict, dict[str, float]]:
        """The batch: from the online replay, the offline one, or data.offline_fraction of it from the
        offline one (each part shaped and n-step summed on its own buffer)."""
        sampler, size = self.agent.batch, self.config.learner.batch_size
        if self.offline is None or not sampler.can_sample(self.offline, size):
            n_offline = 0
        elif self.offline_only or not sampler.can_sample(self.replay, size):
            n_offline = size
        else:
            n_offline = round(size * self.config.data.offline_fraction)
        if n_offline in (0, size):
            return sampler.sample(self.offline if n_offline else self.replay, size, self.shaper)
        online, metrics = sampler.sample(self.replay, size - n_offline, self.shaper)
        offline, _ = sampler.sample(self.offline, n_offline, self.shaper)
        return {key: np.concatenate([online[key], offline[key]]) for key in online}, metrics

    def publish(self) -> None:
        """Publish the acting weights, unless they hold a non-finite value (then nothing is published)."""
        copying = self._phases.clock()
        weights = self.agent.policy_weights()
        bad = [name for name, tensor in weights.items() if not bool(torch.isfinite(tensor).all())]
        if bad:
            raise LearnerDiverged(
                f"after update {self.updates} (at {self.env_steps} env steps) the weights "
                f"{', '.join(bad[:5])} hold non-finite values; policy v{self.version} stays the "
                "last published one"
            )
        self.version += 1
        self._published = PolicySnapshot(self.version, weights)
        self._phases.lap("publish", copying)

    def sync(self, known_version: int = -1) -> tuple[int, PolicySnapshot | None]:
        """What a worker pulls: the global env-step clock, and the latest published weights if newer
        than `known_version`."""
        snapshot = self._published
        return self.env_steps, (snapshot if snapshot.version > known_version else None)

    # ----- reporting -------------------------------------------------------------------------
    def phase_times(self) -> dict[str, float]:
        """Seconds spent in each phase of PHASES since the learner started or reset_phase_times(),
        on the learner's phase clock; together at most the time the updates took (the rest: the
        finiteness check and the counters)."""
        return dict(self._phases.seconds)

    def reset_phase_times(self) -> None:
        """Start phase_times() and report()'s time/<phase>_s afresh (e.g. after a warm-up)."""
        self._phases.reset()
        self._updates_at_phase_reset = self.updates

    def report(self) -> dict[str, float]:
        stats = self.replay.stats()
        elapsed = max(time.monotonic() - self._started, 1e-6)
        return {
            "env_steps": float(self.env_steps),
            "learner_updates": float(self.updates),
            "policy_version": float(self.version),
            "policy_lag": self._lag_sum / self._lag_count if self._lag_count else 0.0,
            "replay_size": float(len(self.replay)),
            "offline_replay_size": float(len(self.offline)) if self.offline is not None else 0.0,
            "updates_per_s": (self.updates - self._updates_at_start) / elapsed,
            "samples_per_insert": self.ratio.achieved(self.env_steps, self.updates),
            **{f"replay_{k}": float(v) for k, v in stats.items() if k not in ("size",)},
            **{f"loss/{k}": float(v) for k, v in self.last_metrics.items()},
            **self._phase_times_per_update(),
        }

    def _phase_times_per_update(self) -> dict[str, float]:
        """time/<phase>_s: mean seconds per update since the last reset (publish: spread over the updates)."""
        updates = max(self.updates - self._updates_at_phase_reset, 1)
        return {f"time/{phase}_s": seconds / updates for phase, seconds in self._phases.seconds.items()}

    # ----- checkpoints -----------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write the agent and the counters into `directory` (a new one: the caller publishes it
        atomically, runner/checkpoint.py). The rows are already on disk in the journal; the
        checkpoint records how many chunks it covers."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.agent.state_dict(), directory / AGENT_FILE)
        with self._lock:
            meta = {
                "updates": self.updates,
                "version": self.version,
                "lag_sum": self._lag_sum,
                "lag_count": self._lag_count,
                "shaper": self.shaper.state_dict(),
                "replay_rng": self.replay.rng_state(),
                "journal_chunks": self.journal.chunks_written,
                "env_steps": self.env_steps,
                "offline_rng": self.offline.rng_state() if self.offline is not None else None,
            }
        (directory / STATE_FILE).write_text(json.dumps(meta))

    def load(self, directory: str | Path) -> None:
        """Restore a checkpoint and rebuild the replay from the journal (every acknowledged row, also
        those after the checkpoint); ValueError naming the file and the reason when it cannot."""
        directory = Path(directory)
        missing = [p for p in (AGENT_FILE, STATE_FILE) if not (directory / p).exists()]
        if missing:
            raise FileNotFoundError(f"checkpoint {directory} is incomplete: missing {', '.join(missing)}")
        meta = _read_state(directory / STATE_FILE)
        agent_state = _read_agent(directory / AGENT_FILE, self.device)
        if self.journal.chunks_written < meta["journal_chunks"]:
            raise ValueError(
                f"checkpoint {directory} covers {meta['journal_chunks']} replay chunks but the "
                f"journal in {self.journal.directory} ends at {self.journal.chunks_written}: its last "
                f"segments are gone and their rows would be lost. The run directory's replay is "
                "damaged: restore the missing segments, or start a new run (train.py --config ...)"
            )
        replay = ReplayBuffer(self.config.learner.replay_capacity, seed=self.config.run.seed)
        chunks = self.journal.rebuild(replay)
        replay.set_rng_state(meta["replay_rng"])
        self.agent.load_state_dict(agent_state)
        self.replay = replay
        self.updates, self.version = int(meta["updates"]), int(meta["version"])
        self._lag_sum, self._lag_count = float(meta["lag_sum"]), int(meta["lag_count"])
        self.shaper.load_state_dict(meta["shaper"])
        if self.offline is not None and meta.get("offline_rng") is not None:
            self.offline.set_rng_state(meta["offline_rng"])
        for sequence, chunk in chunks:  # rows that arrived after the checkpoint
            if sequence >= meta["journal_chunks"]:
                self.shaper.observe(chunk)
        self._published = PolicySnapshot(self.version, self.agent.policy_weights())
        self._started, self._updates_at_start = time.monotonic(), self.updates
        self.reset_phase_times()
        self.journal.clean()
        self._loaded = True
        logger.info(
            "replay rebuilt from %s: %d rows, %d env steps (%d after the checkpoint)",
            self.journal.directory,
            len(self.replay),
            self.env_steps,
            self.env_steps - int(meta["env_steps"]),
        )


@contextmanager
def _dataset_errors_stop_the_start():
    from dataset.parquet import DatasetError

    try:
        yield
    except DatasetError as err:
        raise CannotStart(f"data.dataset: {err}") from err


def _open_dataset(config: Config) -> DatasetSource:
    from dataset.parquet import ParquetDataset

    with _dataset_errors_stop_the_start():
        return ParquetDataset(config.data.dataset, skip_corrupt=config.data.skip_corrupt)


def _read_state(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} cannot be read as the learner's counters ({err})") from err
    missing = [
        k
        for k in ("updates", "version", "lag_sum", "lag_count", "shaper", "replay_rng", "journal_chunks", "env_steps")
        if not isinstance(meta, dict) or k not in meta
    ]
    if missing:
        raise ValueError(f"{path} is not a learner state: missing {', '.join(missing)}")
    return meta


def _read_agent(path: Path, device: str) -> dict:
    try:  # weights_only: a checkpoint from someone else cannot run code here
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a truncated or foreign file
        raise ValueError(f"{path} cannot be loaded as an agent checkpoint ({type(err).__name__}: {err})") from err
