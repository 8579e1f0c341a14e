"""The paper's variants run from their configs through train.py (local mode, small budgets): each
turns on the loss or reward term its name says, fed by the feedback model it names."""

import json

import pytest
import torch

import train
from feedback.clip_model import ClipModel, ClipSource

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    """An untrained tiny open_clip checkpoint: enough to exercise the serving and reward path."""
    torch.manual_seed(0)
    return ClipModel.load(ClipSource("MentorCLIP-Tiny")).save(tmp_path_factory.mktemp("clip") / "tiny")


def run_variant(name, tmp_path, *extra):
    argv = [
        "--config",
        f"configs/variants/{name}.yaml",
        "--config",
        "configs/debug.yaml",
        "run.mode=local",
        "workers.num_workers=1",
        "env.route_suite=null",
        "eval.town=Generated",
        "eval.route_suite=null",
        "run.total_env_steps=260",
        "workers.random_steps=60",
        "learner.learning_starts=60",
        "learner.samples_per_insert=1",
        "learner.publish_every_updates=4",
        "agent.network=small",
        "feedback.bundle_steps=8",
        "eval.max_steps=20",
        f"run.runs_dir={tmp_path}",
        *extra,
    ]
    assert train.main(argv) == 0
    (run_dir,) = tmp_path.glob(f"{name}-*")
    rows = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    return {key for row in rows for key in row}, rows[-1]


@pytest.mark.parametrize(
    "name, term",
    [
        ("drqv2-vmr", "loss/vmr_loss"),
        ("sac-awag", "loss/awag_loss"),
        ("td3-plain", "loss/critic_loss"),
    ],
)
def test_guidance_variants(name, term, tmp_path):
    keys, last = run_variant(name, tmp_path)
    assert term in keys and last["env_steps"] >= 260


@pytest.mark.parametrize(
    "name, term, field",
    [
        ("td3-clip", "loss/clip_bonus", "replay_feedback_clip_margin"),
        ("drqv2-semantic", "loss/semantic_reward", "replay_feedback_safety"),
    ],
)
def test_clip_reward_variants(name, term, field, tmp_path, clip_checkpoint):
    keys, last = run_variant(name, tmp_path, f"feedback.clip.checkpoint={clip_checkpoint}")
    assert term in keys
    assert last[field] > 0.5  # most stored steps carry the CLIP answer
