"""Feedback throughput: the Ray Serve deployment against the same model called directly, at the
same model and batch size, in one run (JSON).

    .venv/bin/python benchmarks/feedback_deployment.py [--batch 64] [--seconds 30] [overrides ...]
    $(scripts/bootstrap_vlm.sh) benchmarks/feedback_deployment.py --model vlm --data data/vlm-town01 \
        --batch 32 feedback.vlm.model=artifacts/vlm/mentor-qwen2vl-tiny

Direct: the feedback model (`ClipFeedback`, or `VlmAdvisor` on its vLLM engine) called in this
process on full batches of `--batch` items. Deployment: the feedback app (`@serve.batch`,
max_batch_size = --batch) fed by bundles of `feedback.bundle_steps` items, as rollout workers send
them, with enough bundles in flight to fill every batch. Both use the same torch thread count (the
replica's `feedback.replica_cpus`). CLIP items carry BEV images from the CLIP dataset when it
exists, else random ones; VLM items come from a Mentor dataset (its rgb_bev, speed, command,
forward). The model is whatever feedback.clip or feedback.vlm names (configs/vlm/cpu.yaml for the VLM).
"""

from __future__ import annotations

import os

# vLLM cuts a process's torch threads to 1 unless OMP_NUM_THREADS is set; a Ray replica gets it set
# to its CPUs, so the direct engine gets the same here.
os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform
import time
from pathlib import Path

import numpy as np
import ray
import torch
from ray import serve

from cluster.feedback_service import APP_PREFIX, feedback_app
from cluster.launch import with_absolute_paths
from configs.loader import load_config
from core.feedback import FeedbackItem
from feedback.registry import build_model

logger = logging.getLogger("benchmark")


WANTED = {"clip": ("clip_margin", "safety"), "vlm": ("vlm_action",)}


def sample_items(n: int, data: str, model: str) -> list[FeedbackItem]:
    if model == "vlm":
        return vlm_items(n, data)
    rng = np.random.default_rng(0)
    if Path(data).is_file():
        from teacher_training.clip_data import decode_png, read_dataset

        rows = read_dataset(data).slice(0, n).to_pylist()
        return [
            FeedbackItem(
                0,
                i,
                ("clip_margin", "safety"),
                r["command"],
                r["speed"],
                np.array(r["expert_action"], np.float32),
                image=decode_png(r["image_png"]),
            )
            for i, r in enumerate(rows)
        ]
    return [
        FeedbackItem(
            0,
            i,
            ("clip_margin", "safety"),
            int(rng.integers(1, 7)),
            float(rng.uniform(0, 8)),
            rng.uniform(-1, 1, 2).astype(np.float32),
            image=rng.integers(0, 256, (192, 192, 3), dtype=np.uint8),
        )
        for i in range(n)
    ]


def vlm_items(n: int, data: str) -> list[FeedbackItem]:
    """Items of the first `n` transition rows of a Mentor dataset, as a worker would send them."""
    from cluster.label import feedback_items
    from dataset.parquet import ParquetDataset

    dataset = ParquetDataset(data)
    chunk = dataset.read_shard(dataset.shards[0], extra=True)
    return feedback_items(chunk, np.flatnonzero(~chunk["is_last"])[:n], WANTED["vlm"])


def measure_raw(config, items: list[FeedbackItem], seconds: float) -> dict:
    model = build_model(config)
    model(items)  # warm-up
    done, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        model(items)
        done += len(items)
    return {"items_per_s": done / (time.monotonic() - started), "torch_threads": torch.get_num_threads()}


def measure_deployment(config, items: list[FeedbackItem], seconds: float, field: str) -> dict:
    app_name = f"{APP_PREFIX}-benchmark-{os.getpid()}"
    handle = serve.run(
        feedback_app(config, seed=0, use_gpu=torch.cuda.is_available()), name=app_name, route_prefix=None
    )
    try:
        size = config.bundle_steps
        bundles = [[_rekey(item, b, i) for i, item in enumerate(items[:size])] for b in range(64)]
        in_flight = max(2, 2 * config.max_batch_size // size)
        for response in [handle.remote(bundles[b % 64]) for b in range(in_flight)]:  # warm-up
            response.result(timeout_s=300)
        started, done, sent, latencies = time.monotonic(), 0, 0, []
        pending = [(handle.remote(bundles[b % 64]), time.monotonic()) for b in range(in_flight)]
        while pending:
            response, sent_at = pending.pop(0)
            answered = response.result(timeout_s=300)
            latencies.append(time.monotonic() - sent_at)
            done += sum(1 for r in answered if field in r.values)
            sent += 1
            if time.monotonic() - started < seconds:
                pending.append((handle.remote(bundles[sent % 64]), time.monotonic()))
        elapsed = time.monotonic() - started
        return {
            "items_per_s": done / elapsed,
            "bundle_items": size,
            "bundles_in_flight": in_flight,
            "bundle_latency_s_median": float(np.median(latencies)),
            "bundle_latency_s_p95": float(np.percentile(latencies, 95)),
        }
    finally:
        serve.delete(app_name)


def _rekey(item: FeedbackItem, env_id: int, step: int) -> FeedbackItem:
    return FeedbackItem(
        env_id, step, item.wanted, item.command, item.speed, item.action, image=item.image, forward=item.forward
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(WANTED), default="clip")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--data",
        default=None,
        help="items' images: the CLIP dataset (default data/clip/town01.parquet) or, for the VLM, "
        "a Mentor dataset directory (default data/vlm-town01)",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. feedback.clip.arch=ViT-B-16")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    threads = torch.get_num_threads()
    data = args.data or {"clip": "data/clip/town01.parquet", "vlm": "data/vlm-town01"}[args.model]
    files = ["configs/vlm/cpu.yaml"] if args.model == "vlm" else None
    config = with_absolute_paths(
        load_config(
            files,
            [
                f"feedback.model={args.model}",
                f"feedback.wanted=[{', '.join(WANTED[args.model])}]",
                f"feedback.max_batch_size={args.batch}",
                f"feedback.replica_cpus={threads}",
                "feedback.batch_wait_timeout_s=0.05",
                *args.overrides,
            ],
        )
    ).feedback
    items = sample_items(args.batch, data, args.model)
    raw = measure_raw(config, items, args.seconds)
    gc.collect()  # the direct model (a vLLM engine and its KV cache) is gone before the replica builds its own
    ray.init(
        address="local", num_cpus=max(os.cpu_count() or 1, threads + 1), include_dashboard=False, log_to_driver=False
    )
    try:
        deployed = measure_deployment(config, items, args.seconds, WANTED[args.model][0])
    finally:
        ray.shutdown()
    clip = config.clip
    model = config.vlm.model if args.model == "vlm" else clip.checkpoint or f"{clip.arch}/{clip.pretrained}"
    print(
        json.dumps(
            {
                "raw": raw,
                "deployment": deployed,
                "ratio_deployment_over_raw": deployed["items_per_s"] / raw["items_per_s"],
                "setting": {
                    "feedback_model": args.model,
                    "batch": args.batch,
                    "model": model,
                    "device": "cuda" if torch.cuda.is_available() else "cpu",
                    "cpus": os.cpu_count(),
                    "machine": platform.machine(),
                    "window_s": args.seconds,
                },
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
