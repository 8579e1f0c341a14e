"""The served VLM against the expert on driving data it was not trained on (JSON).

    vpy=$(scripts/bootstrap_vlm.sh)
    $vpy collect.py --config configs/collect/vlm.yaml env.town=Town02 run.total_env_steps=2000 \\
        collect.output=data/vlm-town02
    $vpy benchmarks/vlm_agreement.py data/vlm-town02 --config configs/vlm/cpu.yaml

Labels the dataset's rows with the VLM through the real serving path (cluster/label.py: Ray Data
actors holding a `VlmAdvisor` on a vLLM engine, batched `generate`, the strict parser), timing it,
then compares each row's `vlm_action` with its `expert_action`: parse rate, mean absolute error of
acc and steer, and agreement (inference/vlm_finetune.agreement_metrics). A dataset labelled before
(labels/vlm/) is compared as it is, without relabelling; delete that folder to measure again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import time

import numpy as np
import ray

from cluster.label import label_dataset
from configs.loader import load_config
from dataset.parquet import ParquetDataset
from teacher_training.vlm_finetune import agreement_metrics


def compare(directory: str) -> dict:
    actions, targets = [], []
    for chunk in ParquetDataset(directory).chunks():
        for i in np.flatnonzero(chunk["expert_action_mask"] > 0):
            actions.append(chunk["vlm_action"][i].copy() if chunk["vlm_action_mask"][i] > 0 else None)
            targets.append(chunk["expert_action"][i])
    return {"rows": len(targets), **agreement_metrics(actions, targets)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="a dataset written by collect.py (with rgb_bev, command, forward)")
    parser.add_argument("--config", action="append", default=[], help="the feedback section's YAML")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per VLM call")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = load_config(args.config, [*args.overrides, "feedback.model=vlm", "feedback.wanted=[vlm_action]"])
    feedback = dataclasses.replace(config.feedback, mode="async")
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        started = time.monotonic()
        labelled = label_dataset(args.directory, feedback, name="vlm", batch_size=args.batch_size)
        elapsed = time.monotonic() - started
    finally:
        ray.shutdown()
    print(
        json.dumps(
            {
                "labelling": {
                    **labelled,
                    "seconds": elapsed,
                    "rows_per_s": labelled["rows"] / elapsed if elapsed else None,
                },
                "against_expert": compare(args.directory),
                "setting": {
                    "dataset": args.directory,
                    "model": feedback.vlm.model,
                    "batch": args.batch_size,
                    "cpus": os.cpu_count(),
                    "machine": platform.machine(),
                },
            },
            indent=1,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
