"""VL-SAFE's agent through train.py in its three modes, with the debug preset on the CPU: offline from a
dataset (checkpoint, resume, evaluation, pictures), offline-to-online in one process, and (ray tier)
CLIP safety labels from Ray Data, then online on a local Ray cluster with the CLIP deployment."""

import json

import numpy as np
import pytest

import collect
import evaluate
import train
from dataset import audit
from dataset.parquet import ParquetDataset
from learners.world_model import inspect

DEBUG = [
    "--config",
    "configs/vlsafe/offline.yaml",
    "--config",
    "configs/debug.yaml",
    "agent.vlsafe.sequence_length=8",
    "agent.vlsafe.horizon=3",
    "learner.batch_size=2",
    "learner.torch_threads=1",
    "eval.max_steps=30",
]


def progress(run_dir):
    return [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("data") / "expert"
    args = [
        "--config",
        "configs/collect/expert.yaml",
        "--config",
        "configs/debug.yaml",
        "run.mode=local",
        "workers.num_workers=1",
        "run.total_env_steps=240",
        f"collect.output={directory}",
        "collect.rows_per_shard=64",
        "workers.chunk_size=16",
    ]
    assert collect.main(args) == 0
    return directory


@pytest.mark.sim
def test_offline_then_resume_then_online_from_it(dataset_dir, tmp_path):
    # The safety-weighted objective refuses a dataset without safety labels, naming the column and the fix.
    refused = DEBUG + [
        f"data.dataset={dataset_dir}",
        f"run.runs_dir={tmp_path}",
        "run.name=refused",
        "run.total_updates=2",
    ]
    assert train.main(refused) == 2
    # The unweighted twin needs no label: offline, checkpoint, resume, evaluate.
    offline = DEBUG + [
        f"data.dataset={dataset_dir}",
        f"run.runs_dir={tmp_path}",
        "run.name=twin",
        "run.total_updates=3",
        "agent.vlsafe.safety_weighting=none",
    ]
    assert train.main(offline) == 0
    (twin,) = tmp_path.glob("twin-*")
    assert json.loads((twin / "checkpoint" / "COMPLETE").read_text())["updates"] == 3
    assert train.main(["--resume", str(twin), "run.total_updates=5"]) == 0
    assert progress(twin)[-1]["learner_updates"] == 5
    assert np.isfinite(progress(twin)[-1]["loss/model/image"])
    assert evaluate.main([str(twin), "--routes", "0", "--max-steps", "20", "--json", str(tmp_path / "e.json")]) == 0
    assert "collision_rate" in json.loads((tmp_path / "e.json").read_text())["mean"]

    # Pictures of what the model learnt.
    assert inspect.main([str(twin), "--dataset", str(dataset_dir), "--out", str(tmp_path / "pictures")]) == 0
    assert {p.name for p in (tmp_path / "pictures").iterdir()} == {
        "open_loop.png",
        "safety_episode.png",
        "training_curves.png",
    }

    # Offline-to-online in one process: the recurrent policy acts, the dataset stays in the batches.
    online = DEBUG + [
        "run.mode=local",
        "workers.num_workers=1",
        f"agent.init_from={twin}",
        "agent.vlsafe.safety_weighting=none",
        f"data.dataset={dataset_dir}",
        "data.offline_fraction=0.5",
        f"run.runs_dir={tmp_path}",
        "run.name=o2o",
        "run.total_env_steps=150",
        "run.total_updates=0",
        "workers.random_steps=0",
        "learner.learning_starts=40",
        "feedback.model=none",
        "feedback.mode=off",
        "feedback.wanted=[]",
    ]
    assert train.main(online) == 0
    (o2o,) = tmp_path.glob("o2o-*")
    last = progress(o2o)[-1]
    assert last["env_steps"] >= 150 and last["learner_updates"] > 0 and last["offline_replay_size"] == 240


@pytest.mark.sim
def test_a_checkpoint_of_another_preset_is_refused_with_both_sizes(dataset_dir, tmp_path, caplog):
    offline = DEBUG + [
        f"data.dataset={dataset_dir}",
        f"run.runs_dir={tmp_path}",
        "run.name=small",
        "run.total_updates=1",
        "agent.vlsafe.safety_weighting=none",
        "eval.routes=[0]",
        "eval.max_steps=1",
    ]
    assert train.main(offline) == 0
    (small,) = tmp_path.glob("small-*")
    bigger = offline[:-3] + ["run.name=bigger", f"agent.init_from={small}", "agent.vlsafe.preset=S"]
    assert train.main(bigger) == 2
    assert "'world_model/debug' network, this agent 'world_model/S'" in caplog.text


@pytest.mark.ray
@pytest.mark.slow
def test_clip_labels_then_offline_vlsafe_then_online_on_ray(dataset_dir, local_ray, tmp_path):
    import torch

    from cluster.label import main as label_main
    from feedback.clip_model import ClipModel, ClipSource

    torch.manual_seed(0)
    clip = ClipModel.load(ClipSource("MentorCLIP-Tiny")).save(tmp_path / "clip")
    import shutil

    labelled = tmp_path / "labelled"
    shutil.copytree(dataset_dir, labelled)
    assert label_main([str(labelled), "--model", "clip", f"feedback.clip.checkpoint={clip}"]) == 0
    rows = sum(int(c["safety_mask"].sum()) for c in ParquetDataset(labelled).chunks())
    assert rows == 240  # every transition row labelled, no is_last row

    offline = DEBUG + [
        f"data.dataset={labelled}",
        f"run.runs_dir={tmp_path}",
        "run.name=vlsafe",
        "run.total_updates=3",
        "eval.routes=[0]",
        "eval.max_steps=5",
    ]
    assert train.main(offline) == 0
    (run,) = tmp_path.glob("vlsafe-*")
    assert progress(run)[-1]["loss/safety_labels"] > 0.5
    report = audit.audit_dataset(labelled, fraction=0.5, ks=(1, 10), run_dir=run)
    assert report  # the world model's predicted safety is audited beside the CLIP label

    online = DEBUG + [
        "run.mode=ray",
        "data.dataset=null",
        "workers.num_workers=1",
        f"run.runs_dir={tmp_path}",
        "run.name=online",
        "run.total_env_steps=300",
        "run.total_updates=0",
        "learner.learning_starts=100",
        "feedback.model=clip",
        "feedback.wanted=[safety]",
        f"feedback.clip.checkpoint={clip}",
        "workers.random_steps=50",
        "eval.routes=[0]",
        "eval.max_steps=5",
        "run.shutdown_ray=false",
    ]
    assert train.main(online) == 0
    (online_run,) = tmp_path.glob("online-*")
    last = progress(online_run)[-1]
    assert last["env_steps"] >= 300 and last["learner_updates"] > 0
    assert last["replay_feedback_safety"] > 0.9 and np.isfinite(last["loss/model/safety"])
