"""The offline chain on the real simulator, in one process: collect.py writes a dataset (and
resumes it), train.py pretrains on it in run.mode offline (checkpoint, resume, evaluation), and an
online run starts from that checkpoint with the dataset mixed into its batches."""

import json

import numpy as np
import pytest

import collect
import evaluate
import train
from dataset.parquet import ParquetDataset, list_shards, read_metadata
from dataset.rows import ROW_SPEC
from dataset.summary import summarize

pytestmark = pytest.mark.sim

DEBUG = ["--config", "configs/quickstart.yaml", "--config", "configs/debug.yaml"]


def collect_args(directory, steps, *extra):
    return [
        "--config",
        "configs/collect/expert.yaml",
        "--config",
        "configs/debug.yaml",
        "run.mode=local",
        "workers.num_workers=1",
        f"run.total_env_steps={steps}",
        f"collect.output={directory}",
        "collect.rows_per_shard=64",
        "workers.chunk_size=16",
        *extra,
    ]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("data") / "expert"
    assert collect.main(collect_args(directory, 300)) == 0
    return directory


def test_collection_writes_expert_rows_with_labels_and_resumes(dataset_dir, tmp_path):
    meta = read_metadata(dataset_dir)
    assert meta["policy"] == "expert+dart" and meta["town"] == "Generated" and meta["perturb_std"] == 0.3
    first = summarize(dataset_dir)
    assert first["transitions"] == 300 and first["label_coverage"]["expert_action"] == 1.0
    data = ParquetDataset(dataset_dir)
    chunk = data.read_shard(data.shards[0], extra=True)
    assert chunk["rgb_bev"].shape[1:] == (192, 192, 3) and chunk["rgb_bev"].any()
    assert np.all(np.diff(chunk["step"]) == 1) and chunk["is_first"][0]
    # A second run on the same directory continues to the new budget on a new stream.
    import shutil

    resumed = tmp_path / "resumed"
    shutil.copytree(dataset_dir, resumed)
    assert collect.main(collect_args(resumed, 500)) == 0
    assert summarize(resumed)["transitions"] == 500
    assert sorted({s.stream_id for s in list_shards(resumed)}) == [0, 1]
    # Another policy into the same directory is refused before anything is written.
    before = sorted(p.name for p in (resumed / "shards").iterdir())
    assert collect.main(collect_args(resumed, 900, "collect.policy=random")) == 2
    assert sorted(p.name for p in (resumed / "shards").iterdir()) == before


def test_offline_pretraining_then_online_fine_tuning(dataset_dir, tmp_path):
    offline = DEBUG + [
        "run.mode=offline",
        f"data.dataset={dataset_dir}",
        "agent.algorithm=td3bc",
        "run.total_updates=6",
        "workers.num_workers=1",
        f"run.runs_dir={tmp_path}",
        "run.name=pre",
    ]
    assert train.main(offline) == 0
    (pre,) = tmp_path.glob("pre-*")
    assert json.loads((pre / "checkpoint" / "COMPLETE").read_text())["updates"] == 6
    assert "mean" in json.loads((pre / "evaluation.json").read_text())
    assert not list((pre / "replay").glob("*.npz"))  # the dataset is not copied into the run

    assert train.main(["--resume", str(pre), "run.total_updates=9"]) == 0
    assert json.loads((pre / "checkpoint" / "COMPLETE").read_text())["updates"] == 9
    before = sorted(p.name for p in pre.rglob("*"))
    assert evaluate.main([str(pre), "--routes", "1", "--max-steps", "20", "--json", str(tmp_path / "e.json")]) == 0
    assert "route 1" in json.loads((tmp_path / "e.json").read_text())
    assert sorted(p.name for p in pre.rglob("*")) == before  # evaluating writes nothing into the run

    online = DEBUG + [
        "run.mode=local",
        "workers.num_workers=1",
        f"agent.init_from={pre}",
        "agent.algorithm=td3",
        f"data.dataset={dataset_dir}",
        "data.offline_fraction=0.5",
        f"run.runs_dir={tmp_path}",
        "run.name=fine",
        "run.total_env_steps=200",
        "workers.random_steps=0",
    ]
    assert train.main(online) == 0
    (fine,) = tmp_path.glob("fine-*")
    rows = [json.loads(line) for line in (fine / "progress.jsonl").read_text().splitlines()]
    assert rows[-1]["offline_replay_size"] == 300 and rows[-1]["replay_size"] > 0
    assert rows[-1]["replay_feedback_expert_action"] == 1.0  # online rows carry the expert's label too


def test_an_offline_run_on_a_corrupt_shard_fails_at_start_naming_it(dataset_dir, tmp_path, caplog):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(dataset_dir, broken)
    shard = list_shards(broken)[0].path
    shutil.copy(shard, shard.with_name("stream-00009-000000.parquet"))  # a good copy stays readable
    shard.write_bytes(shard.read_bytes()[:100])
    args = DEBUG + [
        "run.mode=offline",
        f"data.dataset={broken}",
        "agent.algorithm=bc",
        "run.total_updates=2",
        "workers.num_workers=1",
        f"run.runs_dir={tmp_path / 'runs'}",
    ]
    assert train.main(args) == 2
    assert str(shard) in caplog.text and "skip_corrupt" in caplog.text
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/checkpoint"))
    assert train.main(args + ["data.skip_corrupt=true"]) == 0
    assert set(ROW_SPEC) >= {"expert_action"}
