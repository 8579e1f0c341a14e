"""Wiring decisions that need no running cluster: actor options and path resolution."""

import os

from cluster.feedback_service import _actor_options
from cluster.launch import cpus_needed, with_absolute_paths
from configs.loader import load_config


def test_the_vlm_replica_gets_its_own_runtime_env_and_a_gpu_share():
    config = load_config(None, ["feedback.model=vlm", "feedback.gpu_fraction=0.5", "feedback.replica_cpus=2"]).feedback
    options = _actor_options(config, use_gpu=True)
    assert options["runtime_env"] == {"pip": ["vllm==0.33.0"]}
    assert options["num_gpus"] == 0.5 and options["num_cpus"] == 2
    clip = load_config(None, ["feedback.model=expert+clip", "feedback.wanted=[vlm_action, clip_margin]"]).feedback
    assert "runtime_env" not in _actor_options(clip, use_gpu=False)  # CLIP runs in the project's environment


def test_a_relative_clip_checkpoint_is_resolved_on_the_driver(tmp_path, monkeypatch):
    (tmp_path / "ck").mkdir()
    monkeypatch.chdir(tmp_path)
    config = with_absolute_paths(load_config(None, ["feedback.clip.checkpoint=ck"]))
    assert config.feedback.clip.checkpoint == os.path.join(str(tmp_path), "ck")
    missing = with_absolute_paths(load_config(None, ["feedback.clip.checkpoint=nowhere"]))
    assert missing.feedback.clip.checkpoint == "nowhere"  # left for the preflight check to report


def test_cpus_needed_counts_replica_cpus():
    config = load_config(None, ["workers.num_workers=3", "feedback.replicas=2", "feedback.replica_cpus=2"])
    assert cpus_needed(config) == 1 + 3 + 4 + 1
