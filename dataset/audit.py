"""Safety-label audit: is a foundation model a teacher worth having? How well a per-step safety score
(the CLIP label in a dataset's `safety` column, or a world model's predicted safety) anticipates the
infractions that really happened.

    python -m dataset.audit runs/datasets/town01-expert-dart                       # the CLIP label
    python -m dataset.audit DIR --predicted runs/wm-town01 --ks 1 5 10 20 --png audit.png --json

For each horizon k (in env steps) the score "unsafe = 1 - safety" of a row is compared with "an
infraction (cost > 0) happens within the next k steps of the same episode": AUROC 0.5 is chance, 1.0
ranks every row that precedes an infraction above every row that does not. The calibration reads
1 - safety as the probability of an infraction within 10 steps (a reliability diagram, the expected
calibration error and the Brier score). Only the last --held-out-fraction of each stream's episodes is
audited, the part a world model trained on the rest has not seen.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10, 20)
CALIBRATION_K = 10  # steps: the horizon at which 1 - safety is read as a probability
CLIP_SCORER, WORLD_MODEL_SCORER = "clip label", "world model"
_SMALL_COLUMNS = ["stream_id", "episode_id"]
_AUDIT_COLUMNS = ("cost", "is_last", "safety", "safety_mask", "stream_id", "episode_id")


# ------------------------------------------------------------------------------------------- maths


def episode_segments(episode_id: np.ndarray, is_last: np.ndarray) -> np.ndarray:
    """An int segment index per row: a new segment starts where episode_id changes or after an is_last
    row (rows of one stream in step order; a segment is one episode, or the part of it present)."""
    n = len(episode_id)
    starts = np.ones(n, bool)
    if n > 1:
        starts[1:] = (episode_id[1:] != episode_id[:-1]) | np.asarray(is_last[:-1], bool)
    return np.cumsum(starts) - 1


def future_event_targets(cost: np.ndarray, episode_id: np.ndarray, is_last: np.ndarray, k: int) -> np.ndarray:
    """bool [N]: row t is True when a transition row t' in [t, t + k) of the same episode has cost > 0
    (k in env steps; k = 1 is the row's own step). is_last rows hold no transition: never an event, and
    False themselves. Rows are those of one stream in step order (a dataset's or the replay's layout)."""
    if k < 1:
        raise ValueError(f"future_event_targets: k must be >= 1 step, got {k}")
    cost, is_last = np.asarray(cost), np.asarray(is_last, bool)
    n = len(cost)
    if not (len(episode_id) == len(is_last) == n):
        raise ValueError(
            f"future_event_targets: cost, episode_id, is_last have {n}, {len(episode_id)}, {len(is_last)} rows"
        )
    segment = episode_segments(np.asarray(episode_id), is_last)
    segment_end = np.append(np.flatnonzero(np.diff(segment)) + 1, n)[segment]  # exclusive, per row
    events = np.flatnonzero((cost > 0) & ~is_last)
    after = np.searchsorted(events, np.arange(n))  # index of the first event at or after each row
    next_event = np.append(events, n)[after]  # n when there is none
    rows = np.arange(n)
    return (next_event < rows + k) & (next_event < segment_end)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, ties given the mean of the ranks they span (scipy's rankdata 'average')."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    group_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    group_ends = np.r_[group_starts[1:], len(values)]  # exclusive
    mean_rank = (group_starts + 1 + group_ends) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.repeat(mean_rank, group_ends - group_starts)
    return ranks


def auroc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the ROC curve of `scores` (higher = more likely positive) for bool `targets`, by the
    Mann-Whitney U rank formula with ties counted half; NaN when either class is empty."""
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets, bool)
    if scores.shape != targets.shape:
        raise ValueError(f"auroc: scores {scores.shape} and targets {targets.shape} differ in shape")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"auroc: {int(np.sum(~np.isfinite(scores)))} scores are not finite")
    positives = int(targets.sum())
    negatives = len(targets) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    u = average_ranks(scores)[targets].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def calibration_bins(probabilities: np.ndarray, outcomes: np.ndarray, bins: int = 10) -> dict:
    """Reliability of `probabilities` (in [0, 1]) for bool `outcomes` on `bins` equal-width bins:
    per bin the mean predicted probability, the observed frequency (None for an empty bin) and the
    row count; `ece` (expected calibration error: the count-weighted mean |observed - predicted|) and
    `brier` (mean squared error of the probability), both NaN without rows."""
    p, o = np.asarray(probabilities, np.float64), np.asarray(outcomes, np.float64)
    if p.shape != o.shape:
        raise ValueError(f"calibration_bins: probabilities {p.shape} and outcomes {o.shape} differ in shape")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)  # p = 1.0 falls in the last bin
    count = np.bincount(index, minlength=bins)
    predicted_sum = np.bincount(index, weights=p, minlength=bins)
    observed_sum = np.bincount(index, weights=o, minlength=bins)
    filled = count > 0
    mean_predicted = np.where(filled, predicted_sum / np.maximum(count, 1), np.nan)
    observed = np.where(filled, observed_sum / np.maximum(count, 1), np.nan)
    n = len(p)
    ece = float(np.sum(count[filled] * np.abs(observed[filled] - mean_predicted[filled])) / n) if n else math.nan
    return {
        "edges": edges.tolist(),
        "mean_predicted": _nan_to_none(mean_predicted),
        "observed": _nan_to_none(observed),
        "count": count.tolist(),
        "ece": ece,
        "brier": float(np.mean((p - o) ** 2)) if n else math.nan,
    }


def audit(
    scores_unsafe: np.ndarray,
    valid: np.ndarray,
    cost: np.ndarray,
    episode_id: np.ndarray,
    is_last: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    calibration_k: int = CALIBRATION_K,
) -> dict:
    """How well `scores_unsafe` (1 - P(safe), per row) anticipates infractions: for each horizon k (env
    steps) the AUROC for "an infraction within the next k steps" over the rows where `valid` (e.g.
    safety_mask > 0) and not is_last, with the positive and negative counts; and the calibration of
    the score as the probability of an infraction within `calibration_k` steps. Targets are computed
    over all rows (an infraction on an unlabelled row still counts)."""
    scores_unsafe = np.asarray(scores_unsafe, np.float64)
    rows = np.asarray(valid, bool) & ~np.asarray(is_last, bool)
    per_k = []
    for k in ks:
        targets = future_event_targets(cost, episode_id, is_last, k)[rows]
        per_k.append(
            {
                "k": int(k),
                "positives": int(targets.sum()),
                "negatives": int((~targets).sum()),
                "auroc": auroc(scores_unsafe[rows], targets),
            }
        )
    outcome = future_event_targets(cost, episode_id, is_last, calibration_k)[rows]
    calibration = calibration_bins(np.clip(scores_unsafe[rows], 0.0, 1.0), outcome)
    return {"rows": int(rows.sum()), "per_k": per_k, "calibration": {"k": int(calibration_k), **calibration}}


def _nan_to_none(values: Iterable[float]) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


# -------------------------------------------------------------------------------------------- plot


def plot_audit(results: dict[str, dict], path: str | Path) -> Path:
    """One PNG: AUROC against the horizon k for each scorer (left, chance dashed at 0.5) and a
    reliability diagram per scorer with the diagonal (right). `results` maps a scorer's name (e.g.
    "clip label", "world model") to its `audit` dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, result in results.items():
        ks = [entry["k"] for entry in result["per_k"]]
        left.plot(ks, [entry["auroc"] for entry in result["per_k"]], marker="o", label=name)
        left.set_xticks(ks)
        cal = result["calibration"]
        filled = [i for i, c in enumerate(cal["count"]) if c > 0]
        right.plot(
            [cal["mean_predicted"][i] for i in filled],
            [cal["observed"][i] for i in filled],
            marker="o",
            label=f"{name} (ECE {cal['ece']:.3f})",
        )
    left.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    left.set(
        xlabel="horizon k (steps)",
        ylabel="AUROC of 1 - safety",
        ylim=(0.0, 1.0),
        title="infraction within the next k steps",
    )
    right.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    k = next(iter(results.values()))["calibration"]["k"] if results else CALIBRATION_K
    right.set(
        xlabel="predicted P(infraction) = 1 - safety",
        ylabel="observed frequency",
        xlim=(0, 1),
        ylim=(0, 1),
        title=f"reliability, infraction within {k} steps",
    )
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------- the dataset


class AuditError(ValueError):
    """The dataset cannot be audited as asked; the message names the reason and the fix."""


@dataclass(frozen=True)
class HeldOut:
    """The episodes audited: per stream, the ids of the last episodes in driving order, and how many
    episodes the stream has in all."""

    fraction: float
    episodes: dict[int, list[int]]
    totals: dict[int, int]

    def keys(self) -> set[tuple[int, int]]:
        return {(stream, episode) for stream, ids in self.episodes.items() for episode in ids}

    def as_dict(self) -> dict:
        return {
            "fraction": self.fraction,
            "episodes": {str(s): ids for s, ids in self.episodes.items()},
            "episode_count": sum(len(ids) for ids in self.episodes.values()),
            "of_episodes": sum(self.totals.values()),
        }


def held_out_episodes(directory: str | Path, fraction: float) -> HeldOut:
    """The last `fraction` of each stream's episodes (at least one per stream), in the order they were
    driven. Reads only the shards' small columns."""
    import pyarrow.parquet as pq

    from dataset.parquet import DatasetError, ParquetDataset

    if not 0.0 < fraction <= 1.0:
        raise AuditError(f"--held-out-fraction must be in (0, 1], got {fraction}")
    order: dict[int, dict[int, None]] = {}  # insertion-ordered episode ids per stream
    for shard in ParquetDataset(directory).shards:
        try:
            table = pq.read_table(shard.path, columns=_SMALL_COLUMNS)
        except Exception as err:  # pyarrow raises several kinds for a damaged file
            raise DatasetError(f"shard {shard.path} cannot be read ({err}); delete it (its episodes are lost)") from err
        for stream, episode in zip(table.column("stream_id").to_pylist(), table.column("episode_id").to_pylist()):
            order.setdefault(stream, {}).setdefault(episode, None)
    episodes, totals = {}, {}
    for stream, ids in sorted(order.items()):
        ids = list(ids)
        keep = max(1, math.ceil(fraction * len(ids) - 1e-9))
        episodes[stream], totals[stream] = ids[len(ids) - keep :], len(ids)
    return HeldOut(fraction, episodes, totals)


def held_out_rows(directory: str | Path, held: HeldOut, run_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """The held-out episodes' rows in stream and step order (labels merged): cost, is_last, safety,
    safety_mask, stream_id, episode_id, `episode_key` (one int per (stream, episode)) and, with
    `run_dir`, the world model's `predicted_safety` (P(safe), per row). Shards without a held-out row
    are not decoded."""
    from dataset.parquet import ParquetDataset

    predict = _world_model_predictor() if run_dir is not None else None
    data = ParquetDataset(directory)
    keys = held.keys()
    parts: list[dict[str, np.ndarray]] = []
    for shard in data.shards:
        if shard.stream_id not in held.episodes:
            continue
        chunk = data.read_shard(shard)
        take = np.fromiter(
            (key in keys for key in zip(chunk["stream_id"].tolist(), chunk["episode_id"].tolist())),
            bool,
            len(chunk["step"]),
        )
        if not take.any():
            continue
        rows = {key: value[take] for key, value in chunk.items()}
        part = {key: rows[key] for key in _AUDIT_COLUMNS}
        if predict is not None:
            part["predicted_safety"] = _checked_prediction(predict(run_dir, rows), len(rows["step"]), run_dir)
        parts.append(part)
    out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    pairs = np.stack([out["stream_id"], out["episode_id"]], axis=1)
    out["episode_key"] = np.unique(pairs, axis=0, return_inverse=True)[1].reshape(-1)
    return out


def _world_model_predictor():
    try:
        from learners.world_model.inspect import predicted_safety
    except ImportError as err:
        raise AuditError(
            f"--predicted needs learners.world_model.inspect.predicted_safety, which cannot be imported ({err})"
        ) from err
    return predicted_safety


def _checked_prediction(predicted: np.ndarray, n: int, run_dir: str | Path) -> np.ndarray:
    predicted = np.asarray(predicted, np.float32).reshape(-1)
    if len(predicted) != n:
        raise AuditError(f"predicted_safety({run_dir}) returned {len(predicted)} values for a chunk of {n} rows")
    return predicted


def audit_dataset(
    directory: str | Path, fraction: float = 0.3, ks: Sequence[int] = DEFAULT_KS, run_dir: str | Path | None = None
) -> dict:
    """Audit a dataset's held-out episodes: the CLIP label over rows with safety_mask > 0 and, with
    `run_dir`, the world model's predicted safety over every transition row it gives a finite value.
    Raises AuditError when no held-out row has a safety label."""
    held = held_out_episodes(directory, fraction)
    rows = held_out_rows(directory, held, run_dir)
    transitions = ~rows["is_last"]
    labelled = (rows["safety_mask"] > 0) & transitions
    if not labelled.any():
        raise AuditError(
            f"no held-out row of {directory} has a CLIP safety label: column 'safety' has "
            f"safety_mask > 0 on none of {int(transitions.sum())} transitions. Label the dataset "
            f"first: `python -m cluster.label {directory} --model clip`"
        )
    common = (rows["cost"], rows["episode_key"], rows["is_last"])
    scorers = {CLIP_SCORER: audit(1.0 - rows["safety"], labelled, *common, ks=ks)}
    if run_dir is not None:
        predicted = rows["predicted_safety"]
        scorers[WORLD_MODEL_SCORER] = audit(
            1.0 - np.nan_to_num(predicted), transitions & np.isfinite(predicted), *common, ks=ks
        )
    infractions = int(np.sum((rows["cost"] > 0) & transitions))
    logger.info(
        "audited %d held-out transitions of %s (%d infraction steps)", int(transitions.sum()), directory, infractions
    )
    return {
        "directory": str(directory),
        "held_out": held.as_dict(),
        "transitions": int(transitions.sum()),
        "infraction_steps": infractions,
        "ks": [int(k) for k in ks],
        "scorers": scorers,
    }


# --------------------------------------------------------------------------------------------- CLI


def format_audit(result: dict) -> str:
    """The audit as a small table: per horizon k, each scorer's positives and AUROC."""
    held = result["held_out"]
    lines = [
        f"safety-label audit of {result['directory']}",
        (
            f"  held out: the last {held['fraction']:.0%} of each stream's episodes, {held['episode_count']} of "
            f"{held['of_episodes']} ({_episode_list(held['episodes'])})"
        ),
        f"  {result['transitions']} held-out transitions, {result['infraction_steps']} infraction steps",
    ]
    names = list(result["scorers"])
    lines.append("  scored rows: " + ", ".join(f"{n} {result['scorers'][n]['rows']}" for n in names))
    header = f"  {'k':>4}" + "".join(f"  {n + ' positives':>22} {n + ' AUROC':>18}" for n in names)
    lines.append(header)
    for i, k in enumerate(result["ks"]):
        cells = []
        for n in names:
            entry = result["scorers"][n]["per_k"][i]
            cells.append(f"  {entry['positives']:>22} {_number(entry['auroc']):>18}")
        lines.append(f"  {k:>4}" + "".join(cells))
    lines.append("  (AUROC of 1 - safety for an infraction within the next k steps: 0.5 is chance, 1.0 perfect)")
    for n in names:
        cal = result["scorers"][n]["calibration"]
        lines.append(
            f"  {n}: 1 - safety as P(infraction within {cal['k']} steps): ECE {_number(cal['ece'])}, "
            f"Brier {_number(cal['brier'])}"
        )
    return "\n".join(lines)


def _episode_list(episodes: dict[str, list[int]]) -> str:
    parts = []
    for stream, ids in episodes.items():
        shown = ", ".join(map(str, ids)) if len(ids) <= 6 else f"{ids[0]} .. {ids[-1]}, {len(ids)} episodes"
        parts.append(f"stream {stream}: {shown}")
    return "; ".join(parts)


def _number(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def to_json(value):
    """`value` with NaN floats as None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: to_json(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="a transition dataset (collect.py), labelled with cluster.label")
    parser.add_argument(
        "--held-out-fraction",
        type=float,
        default=0.3,
        help="audit the last this fraction of each stream's episodes (default 0.3)",
    )
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS), help="horizons in steps")
    parser.add_argument("--png", help="where to write the plot (default outputs/audit/<dataset name>.png)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--predicted", metavar="RUN_DIR", help="also audit this world-model run's predicted safety")
    args = parser.parse_args(argv)
    if min(args.ks) < 1:
        parser.error(f"--ks are horizons in steps, each >= 1; got {args.ks}")
    from dataset.parquet import DatasetError

    try:
        result = audit_dataset(args.directory, args.held_out_fraction, args.ks, args.predicted)
    except (AuditError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result["infraction_steps"] == 0:
        result["warning"] = (
            f"no infraction in the {result['transitions']} held-out transitions: AUROC is "
            "undefined and the audit says nothing. Hold out more episodes (--held-out-fraction) "
            "or audit a dataset whose episodes have infractions"
        )
        print(f"audit: {result['warning']}", file=sys.stderr)
        if args.json:
            print(json.dumps(to_json(result), indent=1))
        return 1
    png = Path(args.png) if args.png else Path("outputs/audit") / f"{Path(args.directory).resolve().name}.png"
    result["png"] = str(plot_audit(result["scorers"], png))
    print(json.dumps(to_json(result), indent=1) if args.json else f"{format_audit(result)}\n  plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
