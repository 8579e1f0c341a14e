"""Train (or fine-tune) an open_clip model on BEV images with synthesised driving captions, and
evaluate it as Found-RL's appendix does: conditional 30-way action retrieval on held-out episodes.

    python -m teacher_training.clip_training                      # MentorCLIP-Tiny from scratch on the CPU
    python -m teacher_training.clip_training --arch ViT-B-16 --pretrained laion2b_s34b_b88k --lr 1e-5  # a GPU

Writes to --out (default artifacts/clip/mentor-clip-tiny, what the reward deployment serves by
default): the open_clip local-dir checkpoint, metrics.json, confusion.png, training_curve.png. A
missing --data file is derived from expert transitions collected first (collect.py, teacher_training/clip_data.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from feedback.clip_feedback import context_logits
from feedback.clip_model import ClipModel, ClipSource
from feedback.clip_prompts import ACTIONS_PER_CONTEXT, prompt_library
from teacher_training.clip_data import captions_from_transitions, decode_png, read_dataset
from teacher_training.clip_eval import confusion_matrix, plot_confusion, retrieval_metrics

logger = logging.getLogger(__name__)

DEFAULT_DATA = "data/clip/town01.parquet"
DEFAULT_OUT = "artifacts/clip/mentor-clip-tiny"


@dataclass(frozen=True)
class TrainSettings:
    arch: str = "MentorCLIP-Tiny"
    pretrained: str | None = None  # an open_clip tag (laion2b_s34b_b88k) to fine-tune from
    init_checkpoint: str | None = None  # or a Mentor checkpoint to continue from
    epochs: int = 8
    batch_size: int = 128
    lr: float = 5e-4  # from scratch; fine-tuning a pretrained ViT-B-16 wants ~1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 50
    # The conditional 30-way loss (what the reward uses) against text anchors refreshed every few steps.
    conditional_weight: float = 1.0
    anchor_refresh_steps: int = 20
    eval_fraction: float = 0.15  # of episodes, held out
    seed: int = 0
    device: str = "auto"


def caption_contrastive_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, caption_ids: torch.Tensor, logit_scale: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Symmetric CLIP loss over the batch's UNIQUE captions.

    Many images share a caption (720 prompts), so the usual one-positive-per-row loss would push
    identical captions apart. image -> text: cross-entropy over the unique captions; text -> image:
    every image with that caption is a positive (uniform target).
    image_emb [B, D], text_emb [U, D] (unit norm), caption_ids [B] in 0..U-1.
    """
    logits = logit_scale * image_emb @ text_emb.T  # [B, U]
    image_loss = F.cross_entropy(logits, caption_ids)
    owners = (caption_ids[None, :] == torch.arange(len(text_emb), device=caption_ids.device)[:, None]).float()
    targets = owners / owners.sum(dim=1, keepdim=True)
    text_loss = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    loss = 0.5 * (image_loss + text_loss)
    accuracy = (logits.argmax(dim=1) == caption_ids).float().mean()
    return loss, {"loss": loss.item(), "batch_accuracy": accuracy.item()}


def conditional_action_loss(
    image_emb: torch.Tensor, anchors: torch.Tensor, actions: torch.Tensor, logit_scale: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of the true behaviour among the 30 prompts of each image's own (command, speed)
    context, the softmax the reward is computed from. In-batch contrast mostly separates contexts
    (other commands and speeds); this term teaches the actions within one.
    image_emb [B, D]; anchors [B, 30, D] (detached text embeddings); actions [B] in 0..29."""
    logits = logit_scale * torch.einsum("bd,bkd->bk", image_emb, anchors)
    loss = F.cross_entropy(logits, actions)
    return loss, {
        "conditional_loss": loss.item(),
        "conditional_accuracy": (logits.argmax(dim=1) == actions).float().mean().item(),
    }


@dataclass
class _Split:
    images: np.ndarray  # uint8 [N, H, W, 3]
    captions: list[str]
    contexts: np.ndarray
    actions: np.ndarray


def load_splits(path: str | Path, eval_fraction: float, seed: int) -> tuple[_Split, _Split]:
    """Train / eval by whole episodes, so near-identical neighbouring frames never straddle the split."""
    table = read_dataset(path)
    keys = np.array([f"{t}:{e}" for t, e in zip(table.column("town").to_pylist(), table.column("episode").to_pylist())])
    episodes = np.unique(keys)
    if len(episodes) < 2:
        raise ValueError(
            f"{path} holds {len(episodes)} episode(s); held-out evaluation needs at least 2 "
            "(collect more steps or shorter episodes)"
        )
    rng = np.random.default_rng(seed)
    held_out = rng.choice(episodes, size=max(1, round(eval_fraction * len(episodes))), replace=False)
    is_eval = np.isin(keys, held_out)
    pngs = table.column("image_png").to_pylist()
    captions = table.column("caption").to_pylist()
    contexts = np.asarray(table.column("context").to_numpy(), np.int64)
    actions = np.asarray(table.column("action_class").to_numpy(), np.int64)

    def split(mask: np.ndarray) -> _Split:
        rows = np.flatnonzero(mask)
        return _Split(
            np.stack([decode_png(pngs[i]) for i in rows]), [captions[i] for i in rows], contexts[rows], actions[rows]
        )

    return split(~is_eval), split(is_eval)


def evaluate(clip: ClipModel, split: _Split, batch_size: int = 256) -> tuple[dict, np.ndarray, np.ndarray]:
    """(retrieval metrics, row-normalised confusion, counts) on a split."""
    clip.model.eval()
    clip.forget_texts()
    library = clip.text_embeddings(tuple(prompt_library()))
    logits = np.concatenate(
        [
            context_logits(
                library,
                clip.logit_scale,
                clip.encode_images(split.images[i : i + batch_size]),
                split.contexts[i : i + batch_size],
            )
            for i in range(0, len(split.images), batch_size)
        ]
    )
    predicted = logits.argmax(axis=1)
    return (
        retrieval_metrics(logits, split.actions),
        confusion_matrix(split.actions, predicted),
        confusion_matrix(split.actions, predicted, normalise=False),
    )


def _lr_at(step: int, total: int, settings: TrainSettings) -> float:
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(total - settings.warmup_steps, 1)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _load_model(settings: TrainSettings, device: str) -> ClipModel:
    if settings.init_checkpoint:
        return ClipModel.load(ClipSource(checkpoint=settings.init_checkpoint), device)
    return ClipModel.load(ClipSource(settings.arch, settings.pretrained), device)


def train_clip(data: str | Path, out: str | Path, settings: TrainSettings = TrainSettings()) -> dict:
    """Train, evaluate every epoch, write the checkpoint and figures to `out`; returns the metrics."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if settings.device == "auto" else settings.device
    torch.manual_seed(settings.seed)
    train, held_out = load_splits(data, settings.eval_fraction, settings.seed)
    logger.info("CLIP data: %d train / %d held-out images from %s", len(train.images), len(held_out.images), data)
    clip = _load_model(settings, device)
    params = [p for p in clip.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = max(1, len(train.images) // settings.batch_size)
    total, step, history = settings.epochs * steps_per_epoch, 0, []
    rng = np.random.default_rng(settings.seed)
    before, _, _ = evaluate(clip, held_out)
    started, anchors = time.monotonic(), None
    for epoch in range(settings.epochs):
        order, losses = rng.permutation(len(train.images)), []
        for b in range(steps_per_epoch):
            rows = order[b * settings.batch_size : (b + 1) * settings.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total, settings)
            if settings.conditional_weight > 0 and step % settings.anchor_refresh_steps == 0:
                clip.forget_texts()
                anchors = clip.text_embeddings(tuple(prompt_library())).view(
                    -1, ACTIONS_PER_CONTEXT, clip.model_cfg["embed_dim"]
                )
            clip.model.train()
            metrics = _train_step(clip, train, rows, optimizer, device, anchors, settings.conditional_weight)
            losses.append(metrics["loss"])
            step += 1
            if step % 20 == 0:
                logger.info(
                    "epoch %d step %d/%d loss %.3f batch acc %.2f conditional acc %.2f (%.0f img/s)",
                    epoch + 1,
                    step,
                    total,
                    metrics["loss"],
                    metrics["batch_accuracy"],
                    metrics.get("conditional_accuracy", float("nan")),
                    step * settings.batch_size / (time.monotonic() - started),
                )
        result, _, _ = evaluate(clip, held_out)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                "accuracy": result["accuracy"],
                "neighbour_accuracy": result["neighbour_accuracy"],
            }
        )
        logger.info(
            "epoch %d: loss %.3f, held-out accuracy %.3f, neighbour accuracy %.3f",
            epoch + 1,
            history[-1]["train_loss"],
            result["accuracy"],
            result["neighbour_accuracy"],
        )
    return _finish(clip, held_out, out, settings, data, history, before, time.monotonic() - started)


def _train_step(
    clip: ClipModel,
    split: _Split,
    rows: np.ndarray,
    optimizer,
    device: str,
    anchors: torch.Tensor | None,
    conditional_weight: float,
) -> dict[str, float]:
    captions = [split.captions[i] for i in rows]
    unique = sorted(set(captions))
    ids = torch.as_tensor([unique.index(c) for c in captions], device=device)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        image_emb = clip.model.encode_image(clip.preprocess(split.images[rows]), normalize=True).float()
        text_emb = clip.model.encode_text(clip.tokenizer(unique).to(device), normalize=True).float()
        scale = clip.model.logit_scale.exp().clamp(max=100.0)
        loss, metrics = caption_contrastive_loss(image_emb, text_emb, ids, scale)
        if anchors is not None and conditional_weight > 0:
            contexts = torch.as_tensor(split.contexts[rows], device=device)
            actions = torch.as_tensor(split.actions[rows], device=device)
            conditional, more = conditional_action_loss(image_emb, anchors[contexts], actions, scale)
            loss = loss + conditional_weight * conditional
            metrics |= more
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(clip.model.parameters(), 1.0)
    optimizer.step()
    return metrics


def _finish(
    clip: ClipModel, held_out: _Split, out, settings: TrainSettings, data, history: list, before: dict, seconds: float
) -> dict:
    out = Path(out)
    result, matrix, counts = evaluate(clip, held_out)
    metrics = {
        "held_out": result,
        "untrained_held_out_accuracy": before["accuracy"],
        "history": history,
        "settings": asdict(settings),
        "data": str(data),
        "train_seconds": seconds,
        "device": str(clip.device),
    }
    clip.save(out, extra={"mentor": {k: v for k, v in metrics.items() if k != "history"}})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    plot_confusion(
        matrix,
        out / "confusion.png",
        counts=counts,
        title=f"{clip.arch}: conditional action retrieval, accuracy {result['accuracy']:.2f} "
        f"(neighbours {result['neighbour_accuracy']:.2f})",
    )
    _plot_history(history, out / "training_curve.png")
    logger.info(
        "wrote %s: held-out accuracy %.3f, neighbour accuracy %.3f (majority baseline %.3f)",
        out,
        result["accuracy"],
        result["neighbour_accuracy"],
        result["majority_accuracy"],
    )
    return metrics


def _plot_history(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o")
    left.set(xlabel="epoch", ylabel="contrastive loss", title="training loss")
    right.plot(epochs, [h["accuracy"] for h in history], marker="o", label="accuracy")
    right.plot(epochs, [h["neighbour_accuracy"] for h in history], marker="o", label="neighbour accuracy")
    right.set(xlabel="epoch", ylabel="held-out", title="conditional 30-way retrieval", ylim=(0, 1))
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--collect-steps", type=int, default=10_000, help="when --data does not exist yet")
    for name, default in asdict(TrainSettings()).items():
        kind = type(default) if default is not None else str
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # open_clip logs its model construction at INFO on the root logger: keep only its warnings.
    logging.getLogger().handlers[0].addFilter(lambda r: r.levelno >= logging.WARNING or "open_clip" not in r.pathname)
    if not Path(args.data).exists():
        transitions = Path(args.data).with_suffix("")
        logger.info(
            "%s does not exist: collecting %d expert steps into %s first (collect.py), then its captions",
            args.data,
            args.collect_steps,
            transitions,
        )
        # collect.py is a command of its own (it starts a Ray cluster): run it as one, not imported.
        command = [
            sys.executable,
            "-m",
            "collect",
            "--config",
            "configs/collect/clip.yaml",
            f"collect.output={transitions}",
            f"run.total_env_steps={args.collect_steps}",
        ]
        if subprocess.run(command, check=False).returncode != 0:
            return 2
        captions_from_transitions(transitions, args.data)
    settings = TrainSettings(**{name: getattr(args, name) for name in asdict(TrainSettings())})
    try:
        train_clip(args.data, args.out, settings)
    except (FileNotFoundError, ValueError) as exc:  # a damaged or foreign dataset: say which and why
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
