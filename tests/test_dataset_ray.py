"""Collection and labelling on a local Ray cluster: two collection workers write their own streams,
Ray Data labels every shard with a feedback model, and a labelling that stopped halfway resumes
without labelling finished shards again."""

import numpy as np
import pytest
import ray

from cluster.label import label_dataset
from collect import collect_into
from configs.loader import load_config
from configs.schema import FeedbackConfig
from dataset.parquet import LABELS_DIR, ParquetDataset, list_shards
from dataset.summary import summarize
from runtimes.collection import collection_config, collection_plan

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_collect_on_ray_then_label_and_resume_labelling(cluster, tmp_path):
    config = collection_config(
        load_config(
            ["configs/collect/expert.yaml", "configs/debug.yaml"],
            [
                "workers.num_workers=2",
                "run.total_env_steps=400",
                f"collect.output={tmp_path / 'data'}",
                "collect.rows_per_shard=50",
                "workers.chunk_size=16",
                "workers.pull_weights_every_steps=50",
                "run.mode=ray",
                "run.shutdown_ray=false",  # the module's cluster labels next
            ],
        )
    )
    plan = collection_plan(config)
    finals = list(collect_into(config, plan).values())
    assert sorted(r["stream_id"] for r in finals) == [0, 1]
    shipped = sum(r["shipped_rows"] for r in finals)
    s = summarize(plan.directory)
    assert s["transitions"] == sum(r["env_steps"] for r in finals) == 400  # the budget, to the step
    assert s["rows"] == shipped == sum(r["rows_written"] for r in finals)  # nothing lost between worker and disk

    result = label_dataset(plan.directory, FeedbackConfig(model="expert", wanted=("vlm_action",)))
    assert result["shards_labelled"] == len(list_shards(plan.directory)) and result["rows"] == s["rows"]
    chunks = list(ParquetDataset(plan.directory).chunks())
    rows = {
        key: np.concatenate([c[key] for c in chunks])
        for key in ("vlm_action", "vlm_action_mask", "expert_action", "is_last")
    }
    transition = ~rows["is_last"]
    assert np.all(rows["vlm_action_mask"][transition] == 1.0)
    assert np.array_equal(rows["vlm_action"][transition], rows["expert_action"][transition])

    # A labelling that died halfway: one shard's labels are missing, the others are kept as they are.
    label_files = sorted((plan.directory / LABELS_DIR / "expert").glob("*.parquet"))
    kept = {p: p.stat().st_mtime_ns for p in label_files[1:]}
    label_files[0].unlink()
    again = label_dataset(plan.directory, FeedbackConfig(model="expert", wanted=("vlm_action",)))
    assert again["shards_labelled"] == 1 and label_files[0].exists()
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in kept.items())

    # Resuming the collection on the same directory only adds what the budget still asks for.
    assert collection_plan(config).transitions_to_collect == 0
