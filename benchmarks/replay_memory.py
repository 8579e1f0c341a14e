"""Replay memory: bytes per stored step, batch sampling time against the raw layout, and a full fill (JSON).

    .venv/bin/python benchmarks/replay_memory.py [--rows 50000] [--fill 1000000] [--batch 256] [--n-step 3]
    # also the bytes of real BEVs, from the expert driving Town01:
    MENTOR_MAPS_DIR=../shared/maps/carla .venv/bin/python benchmarks/replay_memory.py --real-steps 1500

The BEVs are synthetic but shaped like the env's (envs/bev.py): a road band over ~30 % of the
pixels, a 16 px route, dashed lane markings (120), vehicle and walker boxes in four history frames,
stop lines at 80/170/255. Sampling is timed on two buffers holding the same rows, in this one run:
the replay as it is (one LZ4 block per BEV row) and the layout it had before (a raw uint8 array,
the old `a["bev"][slots]` gather, kept here only as the reference), with the same seed, so both draw
the same slots. The fill inserts `--fill` rows through ReplayBuffer.add in chunks of 1,000 and
reports the resident memory it took.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from envs.synthetic_bev import synthetic_bevs
from learners.learner import keep_freed_memory
from learners.replay import ReplayBuffer, empty_chunk

BEV_ROW_BYTES = 15 * 96 * 96


class RawBevReplay(ReplayBuffer):
    """The reference: the BEV in one preallocated uint8 array, gathered by fancy indexing."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        super().__init__(capacity, seed)
        self._raw_bev = np.zeros((capacity, 15, 96, 96), np.uint8)

    def _write_bev(self, blocks, slots) -> None:
        self._raw_bev[slots] = self._pending_bev

    def add(self, chunk, bev_blocks=None) -> int:
        self._pending_bev = chunk["bev"]
        return super().add(chunk, bev_blocks=[b""] * len(chunk["step"]))

    def bev(self, slots: np.ndarray) -> np.ndarray:
        return self._raw_bev[slots]


def synthetic_chunk(bevs: np.ndarray, first_step: int, stream: int = 0, episode_length: int = 200) -> dict:
    n = len(bevs)
    chunk = empty_chunk(n)
    chunk["bev"][:] = bevs
    steps = np.arange(first_step, first_step + n)
    chunk["step"][:], chunk["stream_id"][:] = steps, stream
    chunk["state"][:, 0] = steps % 997
    chunk["reward"][:] = 0.1
    chunk["is_first"][:] = steps % episode_length == 0
    chunk["is_last"][:] = steps % episode_length == episode_length - 1
    chunk["truncated"][:] = (steps % episode_length) >= episode_length - 2
    chunk["episode_id"][:] = steps // episode_length
    return chunk


def fill(buffer: ReplayBuffer, pool: np.ndarray, rows: int, chunk_rows: int = 1000) -> float:
    started = time.perf_counter()
    for first in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - first)
        index = (first + np.arange(n)) % len(pool)
        buffer.add(synthetic_chunk(pool[index], first))
    return time.perf_counter() - started


def time_sampling(buffer: ReplayBuffer, batch: int, n_step: int, repeats: int) -> list[float]:
    """CPU seconds per sample() (process time: steadier than wall time on a shared machine; the
    page faults of a fresh batch count, as system time)."""
    buffer.sample(batch, n_step=n_step)  # warm
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        buffer.sample(batch, n_step=n_step)
        times.append(time.process_time() - t0)
    return times


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def real_bev_bytes(steps: int) -> dict:
    from envs.driving_env import DrivingEnv
    from envs.expert import expert_action
    from learners.bev_codec import encode_rows

    env = DrivingEnv(town="Town01", traffic="regular")
    try:
        obs, _ = env.reset(seed=0, options={"route": 0})
        bevs, route = [obs["bev"]], 0
        for _ in range(steps):
            obs, _, terminated, truncated, _ = env.step(expert_action(*env.ground_truth()))
            bevs.append(obs["bev"])
            if terminated or truncated:
                route += 1
                obs, _ = env.reset(options={"route": route})
                bevs.append(obs["bev"])
    finally:
        env.close()
    sizes = np.array([len(b) for b in encode_rows(np.stack(bevs))])
    return {
        "rows": len(sizes),
        "mean": float(sizes.mean()),
        "p99": float(np.percentile(sizes, 99)),
        "max": int(sizes.max()),
    }


def dataset_bytes(pool: np.ndarray, rows: int) -> float:
    from dataset.parquet import ParquetSink, create_dataset

    with tempfile.TemporaryDirectory() as tmp:
        directory = create_dataset(Path(tmp) / "d", {"source": "benchmarks/replay_memory.py"})
        sink = ParquetSink(directory, stream_id=0)
        for first in range(0, rows, 1000):
            sink.write(synthetic_chunk(pool[(first + np.arange(1000)) % len(pool)], first))
        sink.close()
        return sum(p.stat().st_size for p in directory.rglob("*.parquet")) / rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000, help="rows in the two buffers whose sampling is timed")
    parser.add_argument("--fill", type=int, default=1_000_000, help="rows of the full fill (0: skip it)")
    parser.add_argument("--pool", type=int, default=4096, help="distinct synthetic BEVs, cycled")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--n-step", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--real-steps", type=int, default=0, help="also encode this many real BEVs (needs the maps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--glibc-default",
        action="store_true",
        help="leave glibc's allocator as it is (the learner sets keep_freed_memory() on a CPU)",
    )
    args = parser.parse_args()
    allocator = "glibc default" if args.glibc_default or not keep_freed_memory() else "learner's (keep_freed_memory)"
    rng = np.random.default_rng(args.seed)
    pool = synthetic_bevs(rng, args.pool)
    nonzero = np.round((pool > 0).mean(axis=(0, 2, 3)), 4).tolist()
    results: dict = {"synthetic_bev_nonzero_fraction_per_channel": nonzero}

    compact, raw = ReplayBuffer(args.rows, seed=args.seed), RawBevReplay(args.rows, seed=args.seed)
    fill(compact, pool, args.rows)
    fill(raw, pool, args.rows)
    batch_a, batch_b = compact.sample(args.batch, n_step=args.n_step), raw.sample(args.batch, n_step=args.n_step)
    same = all(np.array_equal(batch_a[k], batch_b[k]) for k in batch_a)
    # Interleave the two so that load on the machine hits both alike.
    compact_times, raw_times = [], []
    for _ in range(3):
        compact_times += time_sampling(compact, args.batch, args.n_step, args.repeats // 3)
        raw_times += time_sampling(raw, args.batch, args.n_step, args.repeats // 3)
    results["sampling"] = {
        "rows_in_buffer": args.rows,
        "batch": args.batch,
        "n_step": args.n_step,
        "allocator": allocator,
        "same_batches": same,
        "compact_cpu_ms_median": 1e3 * float(np.median(compact_times)),
        "raw_cpu_ms_median": 1e3 * float(np.median(raw_times)),
        "speed_ratio_compact_over_raw": float(np.median(raw_times) / np.median(compact_times)),
    }
    other_field_bytes = sum(a.itemsize * int(np.prod(a.shape[1:])) for a in compact.arrays.values())
    results["bytes_per_step"] = {
        "bev_compact": compact.bev_bytes / len(compact),
        "bev_raw": BEV_ROW_BYTES,
        "other_fields": other_field_bytes,
        "total_compact": compact.bev_bytes / len(compact) + other_field_bytes,
        "dataset_parquet_synthetic": dataset_bytes(pool, 8192),
    }
    del raw, compact
    if args.real_steps:
        results["real_bev_block_bytes"] = real_bev_bytes(args.real_steps)
    if args.fill:
        before = resident_bytes()
        buffer = ReplayBuffer(args.fill, seed=args.seed)
        seconds = fill(buffer, pool, args.fill)
        grown = resident_bytes() - before
        results["full_fill"] = {
            "rows": args.fill,
            "seconds": seconds,
            "rows_per_s": args.fill / seconds,
            "resident_gib": grown / 2**30,
            "resident_bytes_per_row": grown / args.fill,
            "sample_cpu_ms_median": 1e3 * float(np.median(time_sampling(buffer, args.batch, args.n_step, 10))),
            "raw_layout_would_need_gib": args.fill * (BEV_ROW_BYTES + other_field_bytes) / 2**30,
        }
    results["hardware"] = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
