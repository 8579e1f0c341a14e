"""Conditional 30-way action retrieval: how well a (fine-tuned) CLIP picks the executed behaviour.

Found-RL appendix (Fig. 9): for each image only the 30 prompts of its ground-truth (command, speed)
context compete, the prediction is the most similar one. Reports top-1 accuracy, accuracy counting
intensity neighbours as correct, and a row-normalised 30x30 confusion matrix. Pure numpy +
matplotlib (Agg): the logits come from whichever CLIP produced them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from feedback.clip_prompts import ACTIONS_PER_CONTEXT, LATERAL, LONGITUDINAL, neighbour_mask

_SHORT_LONGITUDINAL = {
    "braking hard": "brake hard",
    "braking": "brake",
    "accelerating fast": "accel fast",
    "accelerating": "accel",
    "accelerating gently": "accel gently",
    "idling": "idle",
}
_SHORT_LATERAL = {
    "going straight": "straight",
    "turning left sharply": "sharp left",
    "turning left": "left",
    "turning right sharply": "sharp right",
    "turning right": "right",
}


def behaviour_names() -> list[str]:
    """30 short labels in library order (longitudinal major), e.g. "brake hard · straight"."""
    return [f"{_SHORT_LONGITUDINAL[lon]} · {_SHORT_LATERAL[lat]}" for lon in LONGITUDINAL for lat in LATERAL]


def _lateral_direction() -> np.ndarray:
    """[30] ints: -1 left, +1 right, 0 straight; read from the names so it follows the library."""
    per_lateral = [-1 if "left" in lat else 1 if "right" in lat else 0 for lat in LATERAL]
    return np.tile(per_lateral, len(LONGITUDINAL))


def _check_labels(labels: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name} must lie in 0..{num_classes - 1}, got values in {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def _check_inputs(logits: np.ndarray, true_actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != ACTIONS_PER_CONTEXT:
        raise ValueError(
            f"logits must be [N, {ACTIONS_PER_CONTEXT}] (one row per image, its own context's "
            f"prompts), got shape {logits.shape}"
        )
    if logits.shape[0] == 0:
        raise ValueError("logits must hold at least one sample, got N = 0")
    if not np.isfinite(logits).all():
        raise ValueError(f"logits must be finite, got {int((~np.isfinite(logits)).sum())} NaN/inf entries")
    true_actions = _check_labels(true_actions, "true_actions", ACTIONS_PER_CONTEXT)
    if len(true_actions) != len(logits):
        raise ValueError(
            f"true_actions must have one label per logits row: expected {len(logits)}, got {len(true_actions)}"
        )
    return logits, true_actions


def _top_k_hits(logits: np.ndarray, true_actions: np.ndarray, k: int) -> np.ndarray:
    # Stable sort on the negated logits: ties resolve to the lower index, as np.argmax does.
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return (top == true_actions[:, None]).any(axis=1)


def _per_class_recall(true_actions: np.ndarray, predicted: np.ndarray) -> list[float | None]:
    support = np.bincount(true_actions, minlength=ACTIONS_PER_CONTEXT)
    hits = np.bincount(true_actions[predicted == true_actions], minlength=ACTIONS_PER_CONTEXT)
    # None, not nan, so the report stays valid JSON.
    return [float(h / s) if s else None for h, s in zip(hits, support)]


def retrieval_metrics(logits: np.ndarray, true_actions: np.ndarray) -> dict:
    """Conditional 30-way retrieval scores; logits [N, 30] against each image's own context, labels [N]."""
    logits, true_actions = _check_inputs(logits, true_actions)
    predicted = logits.argmax(axis=1)
    direction = _lateral_direction()
    # Opposite turn directions: the product of -1/+1 is -1; straight (0) never counts.
    opposite = direction[true_actions] * direction[predicted] < 0
    return {
        "samples": len(true_actions),
        "accuracy": float(np.mean(predicted == true_actions)),
        "neighbour_accuracy": float(np.mean(neighbour_mask()[true_actions, predicted])),
        "top5_accuracy": float(np.mean(_top_k_hits(logits, true_actions, 5))),
        "chance_accuracy": 1.0 / ACTIONS_PER_CONTEXT,
        "majority_accuracy": float(np.bincount(true_actions).max() / len(true_actions)),
        "lateral_confusion": float(np.mean(opposite)),
        "per_class_recall": _per_class_recall(true_actions, predicted),
    }


def confusion_matrix(
    true_actions: np.ndarray, predicted: np.ndarray, num_classes: int = ACTIONS_PER_CONTEXT, normalise: bool = True
) -> np.ndarray:
    """[num_classes, num_classes] float64, rows = true, columns = predicted.

    normalise: each row divided by its support (rows without samples stay all zeros); else raw counts.
    """
    true_actions = _check_labels(true_actions, "true_actions", num_classes)
    predicted = _check_labels(predicted, "predicted", num_classes)
    if len(true_actions) != len(predicted):
        raise ValueError(
            f"true_actions and predicted must have the same length, got {len(true_actions)} and {len(predicted)}"
        )
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (true_actions, predicted), 1.0)
    if not normalise:
        return counts
    support = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)


def _row_support(counts: np.ndarray) -> np.ndarray:
    """Accepts a count matrix [30, 30] (summed over predictions) or the supports [30] directly."""
    counts = np.asarray(counts)
    support = counts.sum(axis=1) if counts.ndim == 2 else counts
    if support.shape != (ACTIONS_PER_CONTEXT,):
        raise ValueError(
            f"counts must be [{ACTIONS_PER_CONTEXT}, {ACTIONS_PER_CONTEXT}] or "
            f"[{ACTIONS_PER_CONTEXT}], got shape {counts.shape}"
        )
    return support.astype(np.int64)


def plot_confusion(
    matrix: np.ndarray,
    path: str | Path,
    title: str = "CLIP conditional action retrieval",
    counts: np.ndarray | None = None,
) -> Path:
    """Save a 30x30 confusion heatmap as PNG; with counts, row support goes on the y labels."""
    import matplotlib

    matplotlib.use("Agg")  # headless: training nodes have no display
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (ACTIONS_PER_CONTEXT, ACTIONS_PER_CONTEXT):
        raise ValueError(f"matrix must be [{ACTIONS_PER_CONTEXT}, {ACTIONS_PER_CONTEXT}], got {matrix.shape}")
    names = behaviour_names()
    y_labels = names if counts is None else [f"{n} (n={s})" for n, s in zip(names, _row_support(counts))]

    fig, ax = plt.subplots(figsize=(10, 9), dpi=120)
    try:
        image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=max(1.0, float(matrix.max())))
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ticks = np.arange(ACTIONS_PER_CONTEXT)
        ax.set_xticks(ticks, labels=names, rotation=90, fontsize=6)
        ax.set_yticks(ticks, labels=y_labels, fontsize=6)
        # Thin lines between the 6 longitudinal groups make the 5x5 lateral blocks readable.
        for edge in np.arange(len(LATERAL), ACTIONS_PER_CONTEXT, len(LATERAL)) - 0.5:
            ax.axhline(edge, color="grey", linewidth=0.5)
            ax.axvline(edge, color="grey", linewidth=0.5)
        _annotate(ax, matrix)
        ax.set_xlabel("predicted behaviour")
        ax.set_ylabel("true behaviour")
        ax.set_title(title)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)  # figures otherwise accumulate across evaluation rounds
    return path


def _annotate(ax, matrix: np.ndarray, threshold: float = 0.1) -> None:
    """Write values >= threshold in their cells; white on dark cells so they stay legible."""
    for i, j in zip(*np.nonzero(matrix >= threshold)):
        value = matrix[i, j]
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=5, color="white" if value > 0.5 else "black")
