"""Conditional 30-way CLIP action retrieval metrics and the confusion plot, against hand-computed values."""

import json

import numpy as np
import pytest

from teacher_training.clip_eval import behaviour_names, confusion_matrix, plot_confusion, retrieval_metrics

# Library order is longitudinal * 5 + lateral: 0 brake hard·straight, 1 brake hard·sharp left,
# 2 brake hard·left, 3 brake hard·sharp right, 5 brake·straight, 24 accel gently·right.
TRUE = np.array([0, 0, 1, 2])
PREDICTED = np.array([0, 5, 3, 2])  # right, intensity neighbour, left/right swap, right


def one_hot_logits(predicted: np.ndarray) -> np.ndarray:
    logits = np.zeros((len(predicted), 30))
    logits[np.arange(len(predicted)), predicted] = 1.0
    return logits


def test_behaviour_names_follow_library_order():
    names = behaviour_names()
    assert len(names) == 30 and len(set(names)) == 30
    assert names[0] == "brake hard · straight"
    assert names[5] == "brake · straight"
    assert names[3] == "brake hard · sharp right"
    assert names[29] == "idle · right"


def test_accuracy_neighbours_and_lateral_confusion():
    metrics = retrieval_metrics(one_hot_logits(PREDICTED), TRUE)
    assert metrics["samples"] == 4
    assert metrics["accuracy"] == pytest.approx(0.5)
    # 0 -> 5 (braking hard vs braking, both straight) is a near miss; 1 -> 3 is not.
    assert metrics["neighbour_accuracy"] == pytest.approx(0.75)
    assert metrics["lateral_confusion"] == pytest.approx(0.25)  # only sharp left -> sharp right
    assert metrics["chance_accuracy"] == pytest.approx(1 / 30)
    assert metrics["majority_accuracy"] == pytest.approx(0.5)  # class 0 is 2 of 4


def test_per_class_recall_uses_none_for_empty_classes_and_is_json():
    metrics = retrieval_metrics(one_hot_logits(PREDICTED), TRUE)
    recall = metrics["per_class_recall"]
    assert len(recall) == 30
    assert recall[:3] == [0.5, 0.0, 1.0]
    assert all(r is None for r in recall[3:])
    assert json.loads(json.dumps(metrics))["per_class_recall"][3] is None


def test_top5_accuracy():
    logits = np.tile(-np.arange(30.0), (2, 1))  # ranking 0, 1, 2, ... for both rows
    metrics = retrieval_metrics(logits, np.array([4, 5]))
    assert metrics["accuracy"] == 0.0
    assert metrics["top5_accuracy"] == pytest.approx(0.5)


def test_lateral_confusion_ignores_straight_and_longitudinal():
    # straight -> left: no; left -> sharp right: yes; brake·left (7) -> accel gently·right (24): yes.
    metrics = retrieval_metrics(one_hot_logits(np.array([1, 3, 24])), np.array([0, 2, 7]))
    assert metrics["lateral_confusion"] == pytest.approx(2 / 3)
    assert metrics["neighbour_accuracy"] == 0.0


def test_confusion_rows_normalised_or_counted():
    matrix = confusion_matrix(TRUE, PREDICTED)
    assert matrix.shape == (30, 30) and matrix.dtype == np.float64
    assert matrix[0, 0] == 0.5 and matrix[0, 5] == 0.5
    assert matrix[1, 3] == 1.0 and matrix[2, 2] == 1.0
    np.testing.assert_allclose(matrix.sum(axis=1), [1, 1, 1] + [0] * 27)
    counts = confusion_matrix(TRUE, PREDICTED, normalise=False)
    assert counts.sum() == 4 and counts[0, 0] == 1 and counts[0, 5] == 1


@pytest.mark.parametrize(
    "logits,labels,match",
    [
        (np.zeros((4, 29)), TRUE, r"\[N, 30\]"),
        (np.zeros(30), TRUE[:1], r"\[N, 30\]"),
        (np.zeros((0, 30)), np.array([], dtype=int), "at least one sample"),
        (np.zeros((3, 30)), TRUE, "expected 3, got 4"),
        (np.zeros((4, 30)), np.array([0, 1, 2, 30]), r"0\.\.29"),
        (np.zeros((4, 30)), np.array([0, -1, 2, 3]), r"0\.\.29"),
        (np.zeros((4, 30)), TRUE.astype(float), "integer"),
        (np.zeros((4, 30)), TRUE[:, None], "1-D"),
        (np.full((4, 30), np.nan), TRUE, "finite"),
    ],
)
def test_retrieval_metrics_validation(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(logits, labels)


def test_confusion_matrix_validation():
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix(TRUE, PREDICTED[:3])
    with pytest.raises(ValueError, match="predicted"):
        confusion_matrix(TRUE, np.array([0, 0, 0, 31]))


def test_plot_confusion_writes_png(tmp_path):
    counts = confusion_matrix(TRUE, PREDICTED, normalise=False)
    path = plot_confusion(confusion_matrix(TRUE, PREDICTED), tmp_path / "nested" / "cm.png", counts=counts)
    assert path == tmp_path / "nested" / "cm.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"\[30, 30\]"):
        plot_confusion(np.zeros((5, 5)), tmp_path / "bad.png")
