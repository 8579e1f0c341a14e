"""A run directory: resolved config, progress log, TensorBoard, episodes, evaluation, curves.
(Checkpoints: runner/checkpoint.py; W&B, the optional second tracker: runner/tracking.py.)"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from core import Episode
from runner.tracking import DEFAULT_TRACKERS, TENSORBOARD, WANDB, WandbTracker, check_trackers

logger = logging.getLogger(__name__)

CURVE_KEYS = ("env_steps", "episode_return", "route_completion", "driving_score")
EPISODE_COLUMNS = ("env_steps", "stream_id", "episode_return", "route_completion", "driving_score")  # episodes.csv


class RunLog:
    """progress.jsonl and episodes.csv always; TensorBoard and W&B as `trackers` says (run.trackers).
    A tracker that cannot work raises runner.tracking.TrackerError here, before the run starts."""

    def __init__(self, run_dir: str | Path, trackers: Sequence[str] = DEFAULT_TRACKERS):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.trackers = check_trackers(trackers)
        self._wandb = WandbTracker(self.dir) if WANDB in self.trackers else None
        self._writer = None
        self._last_line = 0.0
        self._progress_path = self.dir / "progress.jsonl"  # one JSON object per report: keys come and go
        self._episodes_path = self.dir / "episodes.csv"  # its header is there from the start
        if not self._episodes_path.exists():
            self._episodes_path.write_text(",".join(EPISODE_COLUMNS) + "\n")

    def tensorboard(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.dir / "tb"))
        return self._writer

    def scalars(self, values: dict[str, float], step: int) -> None:
        self._track(values, step)
        with open(self._progress_path, "a") as f:
            f.write(json.dumps({"env_steps": step, **values}, default=float) + "\n")

    def episodes(self, episodes: list[Episode]) -> None:
        """Finished training episodes, at the global env step each was reported."""
        with open(self._episodes_path, "a", newline="") as f:
            csv.writer(f).writerows(
                (e.env_steps, e.stream_id, e.episode_return, e.route_completion, e.driving_score) for e in episodes
            )
        for e in episodes:
            self._track(
                {"episode/return": e.episode_return, "episode/route_completion": e.route_completion}, e.env_steps
            )

    def _track(self, values: dict[str, float], step: int) -> None:
        if TENSORBOARD in self.trackers:
            writer = self.tensorboard()
            for key, value in values.items():
                writer.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.scalars(values, step)

    def progress_line(self, text: str, every_s: float) -> None:
        now = time.monotonic()
        if now - self._last_line >= every_s:
            logger.info(text)
            self._last_line = now

    def write_json(self, name: str, payload) -> Path:
        path = self.dir / name
        path.write_text(json.dumps(payload, indent=1, default=float))
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.close()
            self._wandb = None


def plot_learning_curve(run_dir: str | Path, window: int = 10) -> Path | None:
    """episodes.csv -> learning_curve.png: episode return and route completion against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    run_dir = Path(run_dir)
    path = run_dir / "episodes.csv"
    if not path.exists():
        return None
    with open(path) as f:
        rows = list(csv.DictReader(f))
    steps = np.array([float(r["env_steps"]) for r in rows])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in (
        (axes[0], "episode_return", "episode return"),
        (axes[1], "route_completion", "route completion"),
    ):
        if not rows:  # a short run: say so rather than leave no picture
            ax.text(0.5, 0.5, "no training episode has finished yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel("env steps")
            ax.set_ylabel(label)
            continue
        values = np.array([float(r[key]) for r in rows])
        ax.plot(steps, values, ".", alpha=0.3, label="episodes")
        if len(values) >= window:
            # A running median: one spinning episode of -3000 must not hide the trend.
            smooth = np.array([np.median(values[i - window + 1 : i + 1]) for i in range(window - 1, len(values))])
            ax.plot(steps[window - 1 :], smooth, "-", lw=2, label=f"median of {window}")
        low, high = np.percentile(values, [2, 98])
        pad = 0.05 * max(high - low, 1e-6)
        ax.set_ylim(low - pad, high + pad)  # the few extreme episodes fall outside the view
        ax.set_xlabel("env steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = run_dir / "learning_curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
