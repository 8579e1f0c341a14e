"""What a transition dataset holds: episodes, transitions, infractions, returns, action histograms,
labels and their coverage, bytes per transition; optionally an action-histogram PNG.

    python -m dataset.summary runs/datasets/quickstart-expert [--png actions.png] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from dataset.parquet import LABELS_DIR, SHARDS_DIR, DatasetError, ParquetDataset

_BINS = np.linspace(-1.0, 1.0, 11)
_COLUMNS = (
    "action",
    "reward",
    "cost",
    "terminated",
    "truncated",
    "is_last",
    "episode_id",
    "vlm_action_mask",
    "clip_margin_mask",
    "safety_mask",
    "expert_action_mask",
)


def summarize(directory: str | Path, skip_corrupt: bool = False) -> dict:
    """Counts from the shards' small columns (the BEV is not decoded)."""
    data = ParquetDataset(directory, skip_corrupt=skip_corrupt)
    columns = {key: [] for key in _COLUMNS}
    for shard in data.shards:
        try:
            table = pq.read_table(shard.path, columns=list(_COLUMNS))
        except Exception as err:  # pyarrow raises several kinds for a damaged file
            if not skip_corrupt:
                raise DatasetError(
                    f"shard {shard.path} cannot be read ({err}); pass --skip-corrupt to skip it"
                ) from err
            continue
        for label_set in data.label_sets():  # label files override the shard's own mask columns
            label_path = Path(directory) / LABELS_DIR / label_set / shard.name
            if label_path.exists():
                labels = pq.read_table(label_path)
                for key in labels.column_names:
                    if key in _COLUMNS and key.endswith("_mask"):
                        table = table.set_column(table.schema.get_field_index(key), key, labels.column(key))
        for key in _COLUMNS:
            columns[key].append(
                table.column(key).to_numpy()
                if key != "action"
                else np.stack(table.column(key).to_numpy(zero_copy_only=False))
            )
    c = {key: np.concatenate(values) if values else np.zeros(0) for key, values in columns.items()}
    transition = ~c["is_last"].astype(bool)
    action = c["action"][transition] if len(c["action"]) else np.zeros((0, 2))
    returns = _episode_returns(c["episode_id"], c["reward"], transition)
    size = sum(p.stat().st_size for p in (Path(directory) / SHARDS_DIR).glob("*.parquet"))
    n = int(transition.sum())
    return {
        "directory": str(directory),
        "metadata": data.metadata,
        "shards": len(data.shards),
        "rows": len(transition),
        "transitions": n,
        "episodes": int(c["is_last"].sum()),
        "terminated": int(c["terminated"][transition].sum()),
        "truncated": int(c["truncated"][transition].sum()),
        "infraction_steps": int((c["cost"][transition] > 0).sum()),
        "mean_episode_return": float(np.mean(returns)) if returns else 0.0,
        "acc_histogram": np.histogram(action[:, 0], _BINS)[0].tolist() if n else [],
        "steer_histogram": np.histogram(action[:, 1], _BINS)[0].tolist() if n else [],
        "histogram_bins": _BINS.tolist(),
        "label_coverage": {
            key.removesuffix("_mask"): float(c[key][transition].mean()) if n else 0.0
            for key in _COLUMNS
            if key.endswith("_mask")
        },
        "label_sets": data.label_sets(),
        "bytes_on_disk": size,
        "bytes_per_transition": size / max(n, 1),
    }


def _episode_returns(episode_id: np.ndarray, reward: np.ndarray, transition: np.ndarray) -> list[float]:
    if not len(episode_id):
        return []
    ids, inverse = np.unique(episode_id[transition], return_inverse=True)
    return np.bincount(inverse, weights=reward[transition], minlength=len(ids)).tolist()


def format_summary(s: dict) -> str:
    meta = s["metadata"]
    lines = [
        f"dataset {s['directory']}: {meta.get('policy')} on {meta.get('town')} ({meta.get('traffic')} traffic)",
        f"  {s['transitions']} transitions, {s['episodes']} finished episodes ({s['terminated']} terminated, "
        f"{s['truncated']} truncated), {s['shards']} shards",
        f"  infraction steps {s['infraction_steps']}, mean episode return {s['mean_episode_return']:.1f}",
        f"  {s['bytes_on_disk'] / 1e6:.1f} MB on disk, {s['bytes_per_transition']:.0f} bytes per transition",
        (
            "  labels: "
            + ", ".join(f"{k} {v:.2f}" for k, v in s["label_coverage"].items())
            + (f" (label sets: {', '.join(s['label_sets'])})" if s["label_sets"] else "")
        ),
        "  acc   histogram [-1..1]: " + " ".join(str(v) for v in s["acc_histogram"]),
        "  steer histogram [-1..1]: " + " ".join(str(v) for v in s["steer_histogram"]),
    ]
    return "\n".join(lines)


def plot_actions(s: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    centres = (np.asarray(s["histogram_bins"][:-1]) + np.asarray(s["histogram_bins"][1:])) / 2
    for ax, key in zip(axes, ("acc", "steer")):
        ax.bar(centres, s[f"{key}_histogram"], width=0.18)
        ax.set_title(f"{key} ({s['transitions']} transitions)")
        ax.set_xlabel(key)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory")
    parser.add_argument("--png", help="write the action histograms here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--skip-corrupt", action="store_true", help="skip shards that cannot be read")
    args = parser.parse_args(argv)
    try:
        s = summarize(args.directory, args.skip_corrupt)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(s, indent=1) if args.json else format_summary(s))
    if args.png:
        plot_actions(s, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
