"""Looking inside a trained world model: what people would rather see than read.

    python -m learners.world_model.inspect RUN_DIR --dataset DIR [--out DIR] [--episode N]

writes into --out (default outputs/world_model/<run name>/):
- open_loop.png: real BEV (top) against the model's open-loop prediction (bottom) over the imagination
  horizon, after a few observed steps of context, with the recorded actions replayed;
- safety_episode.png: the predicted safety probability along one episode against the CLIP label, with
  the steps that had an infraction marked;
- training_curves.png: the model's loss terms, the critics' values and the actor's weights against updates.

`predicted_safety(run_dir, chunk)` is what the safety-label audit (dataset/audit.py) calls.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
from pathlib import Path

import numpy as np
import torch

from configs.loader import load_config
from learners.actor_critic.networks import visible_state
from learners.registry import make_agent
from learners.warm_start import agent_file
from learners.world_model.agent import WorldModelAgent, downsample_masks, previous_step

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=2)
def load_agent(run_dir: str) -> WorldModelAgent:
    """The run's world-model agent from its last complete checkpoint, on the CPU."""
    config = load_config(Path(run_dir) / "config.yaml", [])
    if config.agent.algorithm != "vlsafe":
        raise ValueError(f"{run_dir} trained agent.algorithm={config.agent.algorithm}, not a world model (vlsafe)")
    agent = make_agent(config.agent, "cpu", config.run.seed)
    agent.load_state_dict(torch.load(agent_file(run_dir), map_location="cpu", weights_only=True))
    return agent


def _tensors(agent: WorldModelAgent, chunk: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """One chunk (rows of one stream in step order) as a single [1, N] sequence."""
    action = torch.as_tensor(np.array(chunk["action"], np.float32))[None]
    state = visible_state(torch.as_tensor(np.array(chunk["state"], np.float32))[None], agent.config)
    return {
        "bev": torch.as_tensor(np.array(chunk["bev"]))[None],
        "state": state,
        "prev_action": previous_step(action),
        "is_first": torch.as_tensor(chunk["is_first"])[None],
    }


def _observe(agent: WorldModelAgent, t: dict[str, torch.Tensor], rows: slice) -> dict[str, torch.Tensor]:
    """The posterior of rows `rows` of a [1, N] sequence, filtered in order, latents at their mode."""
    return agent.model.observe(
        t["bev"][:, rows], t["state"][:, rows], t["prev_action"][:, rows], t["is_first"][:, rows], mode=True
    )


@torch.no_grad()
def filtered_features(agent: WorldModelAgent, chunk: dict[str, np.ndarray]) -> torch.Tensor:
    """The posterior features [N, F] of every row, filtered in order (reset at is_first), latents at their mode."""
    post = _observe(agent, _tensors(agent, chunk), slice(None))
    return agent.model.features(post["h"], post["z"])[0]


def predicted_safety(run_dir: str | Path, chunk: dict[str, np.ndarray]) -> np.ndarray:
    """float32 [N]: the world model's probability that each row's observation is safe."""
    agent = load_agent(str(run_dir))
    with torch.no_grad():
        return torch.sigmoid(agent.model.safety_head(filtered_features(agent, chunk))).squeeze(-1).numpy()


@torch.no_grad()
def open_loop(
    agent: WorldModelAgent, chunk: dict[str, np.ndarray], start: int, context: int, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Observe rows [start, start + context), then imagine `horizon` steps with the recorded actions.
    Returns real and predicted BEV masks, uint8 [horizon, 15, px, px] at the decoder's resolution."""
    rows = {key: value[start : start + context + horizon] for key, value in chunk.items()}
    t = _tensors(agent, rows)
    m = agent.model
    post = _observe(agent, t, slice(0, context))
    h, z = post["h"][:, -1], post["z"][:, -1]
    predicted = []
    for k in range(context, context + horizon):
        h, z, _ = m.rssm.imagine_step(h, z, t["prev_action"][:, k], mode=True)
        predicted.append(torch.sigmoid(m.bev_decoder(m.features(h, z)))[0])
    imagined = (torch.stack(predicted).clamp(0, 1) * 255).to(torch.uint8)
    # Drawn where the prediction reaches 20 % of full scale: every drawn mask value (green lights 80,
    # broken lanes 120, out of 255) is above it, the decoder's faint noise below it.
    imagined[imagined < 51] = 0
    real = downsample_masks(t["bev"][0, context : context + horizon], agent.size.decoder_px)
    return real.numpy(), imagined.numpy()


def _rgb(masks: np.ndarray) -> np.ndarray:
    from envs.bev import masks_to_rgb

    return masks_to_rgb(np.ascontiguousarray(masks), np.zeros(masks.shape[1:], np.uint8))


def plot_open_loop(real: np.ndarray, imagined: np.ndarray, path: Path, every: int = 3) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(range(0, len(real), every))
    fig, axes = plt.subplots(2, len(steps), figsize=(1.6 * len(steps), 3.6), squeeze=False)
    for col, k in enumerate(steps):
        for row, (name, frames) in enumerate((("real", real), ("imagined", imagined))):
            ax = axes[row, col]
            ax.imshow(_rgb(frames[k]))
            ax.set_xticks([]), ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name)
            if row == 0:
                ax.set_title(f"t+{k + 1}", fontsize=8)
    fig.suptitle("open-loop prediction: recorded actions replayed in the model")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_safety_episode(predicted: np.ndarray, chunk: dict[str, np.ndarray], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(len(predicted))
    labelled = chunk["safety_mask"] > 0
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.plot(steps, predicted, "-", label="world model: predicted safety")
    ax.plot(steps[labelled], chunk["safety"][labelled], ".", ms=3, alpha=0.6, label="CLIP safety label")
    for step in steps[chunk["cost"] > 0]:
        ax.axvline(step, color="tab:red", alpha=0.3, lw=1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step of the episode (red: a step with an infraction)")
    ax.set_ylabel("P(safe)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


CURVES = (
    ("model", ("model/image", "model/reward", "model/cost", "model/safety", "model/kl", "model/continue")),
    ("critics", ("reward_critic/value", "cost_critic/value", "reward_critic/return", "cost_critic/return")),
    ("actor", ("actor/imagined_weight_mean", "actor/replayed_weight_mean", "actor/imagined_entropy")),
)


def plot_training_curves(run_dir: Path, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = (run_dir / "progress.jsonl").read_text().splitlines() if (run_dir / "progress.jsonl").exists() else []
    rows = [json.loads(line) for line in lines if line.strip()]
    if not rows:
        return None
    updates = np.array([r.get("learner_updates", 0.0) for r in rows])
    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 3.6))
    for ax, (title, keys) in zip(axes, CURVES):
        for key in keys:
            values = np.array([r.get(f"loss/{key}", np.nan) for r in rows], float)
            if np.isfinite(values).any():
                ax.plot(updates, values, label=key)
        ax.set_title(title)
        ax.set_xlabel("updates")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _episode_chunk(dataset_dir: str, episode: int) -> dict[str, np.ndarray]:
    """The rows of the dataset's `episode`-th episode (in shard order; up to the end of its shard when
    the episode goes on in the next one)."""
    from dataset.parquet import ParquetDataset

    seen = 0
    for chunk in ParquetDataset(dataset_dir).chunks():
        lasts = np.flatnonzero(chunk["is_last"])
        for first in np.flatnonzero(chunk["is_first"]):
            if seen == episode:
                ends = lasts[lasts > first]
                end = ends[0] + 1 if len(ends) else len(chunk["step"])
                return {key: value[first:end] for key, value in chunk.items()}
            seen += 1
    raise ValueError(f"{dataset_dir} holds {seen} episodes; --episode {episode} is not among them")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--dataset", required=True, help="a dataset directory (collect.py) to replay")
    parser.add_argument("--episode", type=int, default=0, help="which complete episode of the dataset")
    parser.add_argument("--out", help="default outputs/world_model/<run name>")
    parser.add_argument("--context", type=int, default=5, help="observed steps before the open-loop prediction")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_dir = Path(args.run_dir)
    out = Path(args.out or Path("outputs/world_model") / run_dir.name)
    out.mkdir(parents=True, exist_ok=True)
    try:
        agent = load_agent(str(run_dir))
        episode = _episode_chunk(args.dataset, args.episode)
    except (FileNotFoundError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    length = len(episode["step"])
    horizon = min(agent.params.horizon, length - args.context)
    if horizon < 1:
        logger.error(
            "episode %d has %d rows: too short for %d steps of context; pick another with --episode",
            args.episode,
            length,
            args.context,
        )
        return 2
    start = max(0, min(length - args.context - horizon, length // 3))
    real, imagined = open_loop(agent, episode, start, args.context, horizon)
    written = [
        plot_open_loop(real, imagined, out / "open_loop.png"),
        plot_safety_episode(predicted_safety(run_dir, episode), episode, out / "safety_episode.png"),
        plot_training_curves(run_dir, out / "training_curves.png"),
    ]
    for path in written:
        if path is not None:
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
