"""CLIP training from driving data: the caption loss by hand, and collect -> train -> evaluate ->
serve -> label on the embedded simulator with a tiny open_clip model."""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import collect
from configs.loader import load_config
from core.feedback import FeedbackItem
from feedback.clip_prompts import LATERAL, LONGITUDINAL, SPEED_PHRASES
from feedback.registry import build_model
from teacher_training.clip_data import captions_from_transitions, decode_png, label_safety, read_dataset
from teacher_training.clip_training import TrainSettings, caption_contrastive_loss, train_clip

pytestmark = pytest.mark.sim


def test_identical_captions_are_not_pushed_apart():
    # Two images share the only caption: image->text has one class (loss 0); text->image spreads
    # over two equal logits against a uniform target (loss log 2); the total is their mean.
    image = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), dim=1)
    text = torch.tensor([[1.0, 0.0]])
    loss, _ = caption_contrastive_loss(image, text, torch.tensor([0, 0]), torch.tensor(10.0))
    assert loss.item() == pytest.approx(0.5 * math.log(2), abs=1e-6)


def test_distinct_captions_give_the_clip_loss():
    image = torch.eye(2)
    text = torch.eye(2)
    loss, metrics = caption_contrastive_loss(image, text, torch.tensor([0, 1]), torch.tensor(3.0))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-3.0)), abs=1e-6)
    assert metrics["batch_accuracy"] == 1.0


def test_collect_train_evaluate_serve_and_label(tmp_path):
    data = tmp_path / "clip.parquet"
    for steps in (48, 96):  # two collections into one dataset: two streams, two episodes to hold one out
        assert (
            collect.main(
                [
                    "--config",
                    "configs/collect/clip.yaml",
                    "env.town=Generated",
                    f"run.total_env_steps={steps}",
                    f"collect.output={tmp_path / 'transitions'}",
                ]
            )
            == 0
        )
    summary = captions_from_transitions(tmp_path / "transitions", data)
    assert 80 <= summary["rows"] <= 96 and summary["town"] == "Generated"  # minus any pre-infraction steps
    table = read_dataset(data)
    row = table.slice(0, 1).to_pylist()[0]
    assert decode_png(row["image_png"]).shape == (192, 192, 3)
    lon, lat = divmod(row["action_class"], len(LATERAL))
    assert LONGITUDINAL[lon] in row["caption"] and LATERAL[lat] in row["caption"]
    assert SPEED_PHRASES[row["context"] % len(SPEED_PHRASES)] in row["caption"]

    out = tmp_path / "clip-ck"
    torch.manual_seed(0)
    metrics = train_clip(data, out, TrainSettings(epochs=1, batch_size=16, warmup_steps=1, eval_fraction=0.34))
    held = metrics["held_out"]
    assert 0.0 <= held["accuracy"] <= held["neighbour_accuracy"] <= 1.0 and held["samples"] > 0
    for name in ("confusion.png", "training_curve.png", "metrics.json", "open_clip_config.json"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "metrics.json").read_text())["history"][0]["epoch"] == 1

    # The trained checkpoint is what the CLIP feedback model serves.
    config = load_config(
        None, ["feedback.model=clip", "feedback.wanted=[clip_margin, safety]", f"feedback.clip.checkpoint={out}"]
    ).feedback
    model = build_model(config)
    image = decode_png(row["image_png"])
    (result,) = model(
        [
            FeedbackItem(
                0,
                0,
                ("clip_margin", "safety"),
                row["command"],
                row["speed"],
                np.array(row["expert_action"], np.float32),
                image=image,
            )
        ]
    )
    assert 0.0 <= result.values["clip_margin"] <= 1.0 and 0.0 <= result.values["safety"] <= 1.0

    label_safety(data, model.image_safety)
    safety = pq.read_table(data, columns=["safety"]).column("safety").to_numpy()
    assert len(safety) == summary["rows"] and np.all((safety >= 0) & (safety <= 1))


def test_reading_a_foreign_parquet_names_the_missing_columns(tmp_path):
    import pyarrow as pa

    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    with pytest.raises(ValueError, match="image_png"):
        read_dataset(path)
    with pytest.raises(FileNotFoundError, match="teacher_training.clip_data"):
        read_dataset(tmp_path / "missing.parquet")


def test_conditional_loss_is_the_cross_entropy_within_the_context():
    from teacher_training.clip_training import conditional_action_loss

    image = torch.tensor([[1.0, 0.0]])
    anchors = torch.zeros(1, 30, 2)
    anchors[0, 4] = torch.tensor([1.0, 0.0])  # only behaviour 4 matches the image
    loss, metrics = conditional_action_loss(image, anchors, torch.tensor([4]), torch.tensor(2.0))
    # logits: 2 for behaviour 4, 0 for the 29 others
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 29)), abs=1e-6)
    assert metrics["conditional_accuracy"] == 1.0
