"""Fine-tune a Hugging Face VLM on Mentor's driving data (Found-RL §4.2: InternVL3-1B fully
fine-tuned on expert BEV data to answer {"throttle", "steer", "brake"}).

    # CPU: a small Qwen2-VL built locally (teacher_training/vlm_build.py), fully fine-tuned
    python -m teacher_training.vlm_finetune --dataset data/vlm-town01 --out artifacts/vlm/mentor-qwen2vl-tiny
    # GPU: a local checkpoint (Qwen2.5-VL, InternVL3-1B-hf), full or LoRA
    python -m teacher_training.vlm_finetune --base /models/Qwen2.5-VL-3B-Instruct --dataset D --out O --lora-rank 16

The loss is the answer's tokens only (the prompt and images are context). Every --eval-every steps
the model answers held-out examples greedily, as vLLM will serve it, and the learning curve
records the training loss, the held-out parse rate, the action error against the expert and the
risk descriptions' exact-match rate. Writes to --out: the model, tokenizer and processor (loadable
by vLLM), `finetune.json` (settings, final metrics, the curve) and `learning_curve.png`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from feedback.torchvision_ops import define_ops
from feedback.vlm_prompt import parse_action
from teacher_training.vlm_data import CLEAR, VlmExample, build_examples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneSettings:
    steps: int = 1500  # optimiser steps
    batch_size: int = 16  # examples per step
    lr: float = 1e-3  # peak AdamW step size (a pretrained base wants ~1e-5 to 5e-5)
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 10 %
    weight_decay: float = 0.01
    eval_every: int = 250  # steps between held-out evaluations
    log_every: int = 25  # steps between progress lines
    eval_examples: int = 128  # held-out examples answered per evaluation
    max_new_tokens: int = 32  # as served (Found-RL: 32)
    frames: int = 3  # K + 1 frames per risk example
    risk_share: float = 0.25  # of all examples
    lora_rank: int = 0  # 0: full fine-tuning
    seed: int = 0
    torch_threads: int = 2
    device: str = "auto"  # auto: cuda when there is a GPU
    dtype: str = "float32"  # of the weights while training: float32, or bfloat16 on a GPU


# ------------------------------------------------------------------------------------------ batching


def _messages(example: VlmExample) -> list[dict]:
    content = [{"type": "image"} for _ in example.images] + [{"type": "text", "text": example.prompt}]
    return [{"role": "user", "content": content}]


def _images(examples: list[VlmExample]):
    from PIL import Image

    return [Image.fromarray(image) for example in examples for image in example.images]


def collate(processor, examples: list[VlmExample]) -> dict:
    """Model inputs with `labels` on the answer tokens (and the end-of-turn token) only."""
    import torch

    tokenizer = processor.tokenizer
    tokenizer.padding_side = "right"
    prompts = [
        processor.apply_chat_template(_messages(e), tokenize=False, add_generation_prompt=True) for e in examples
    ]
    answers = [e.answer + tokenizer.eos_token for e in examples]
    inputs = processor(
        text=[p + a for p, a in zip(prompts, answers)], images=_images(examples), return_tensors="pt", padding=True
    )
    labels = torch.full_like(inputs["input_ids"], -100)
    lengths = inputs["attention_mask"].sum(dim=1)
    for i, answer in enumerate(answers):
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        end = int(lengths[i])
        tail = inputs["input_ids"][i, end - len(answer_ids) : end]
        if tail.tolist() != answer_ids:  # the answer must tokenise the same inside the sequence
            raise RuntimeError(f"answer tokens do not line up in example {i}: {answer!r}")
        labels[i, end - len(answer_ids) : end] = tail
    inputs["labels"] = labels
    return inputs


def generate(model, processor, examples: list[VlmExample], max_new_tokens: int) -> list[str]:
    """Greedy answers, as vLLM serves them (temperature 0)."""
    import torch

    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    prompts = [
        processor.apply_chat_template(_messages(e), tokenize=False, add_generation_prompt=True) for e in examples
    ]
    inputs = processor(text=prompts, images=_images(examples), return_tensors="pt", padding=True).to(model.device)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


# ---------------------------------------------------------------------------------------- evaluation

AGREEMENT_TOLERANCE = (0.2, 0.1)  # |acc - expert acc|, |steer - expert steer| for an answer to agree


def action_metrics(answers: list[str], targets: list[np.ndarray]) -> dict[str, float]:
    """`agreement_metrics` of the answers as the strict parser reads them."""
    return agreement_metrics([parse_action(a) if isinstance(a, str) else None for a in answers], targets)


def agreement_metrics(actions: list[np.ndarray | None], targets: list[np.ndarray]) -> dict[str, float]:
    """Parse rate (the share of actions that are not None), mean absolute error of acc and steer
    against the expert over the parsed ones, and agreement: the share of ALL answers that parse and
    lie within AGREEMENT_TOLERANCE of the expert's action."""
    ok = [(a, t) for a, t in zip(actions, targets) if a is not None]
    if not ok:
        return {"parse_rate": 0.0, "mae_acc": math.nan, "mae_steer": math.nan, "agreement": 0.0}
    err = np.abs(np.array([a for a, _ in ok]) - np.array([t for _, t in ok]))
    agree = int(np.sum((err[:, 0] <= AGREEMENT_TOLERANCE[0]) & (err[:, 1] <= AGREEMENT_TOLERANCE[1])))
    return {
        "parse_rate": len(ok) / len(actions),
        "mae_acc": float(err[:, 0].mean()),
        "mae_steer": float(err[:, 1].mean()),
        "agreement": agree / len(actions),
    }


def risk_metrics(answers: list[str], truths: list[str]) -> dict[str, float]:
    """Exact-match rate of the description, and agreement on whether there is a risk at all."""
    if not truths:
        return {}
    exact = np.mean([a.strip() == t for a, t in zip(answers, truths)])
    gate = np.mean([(a.strip() == CLEAR) == (t == CLEAR) for a, t in zip(answers, truths)])
    return {"risk_exact": float(exact), "risk_clear_agreement": float(gate)}


def evaluate(model, processor, held_out: list[VlmExample], settings: FinetuneSettings) -> dict[str, float]:
    model.eval()
    chosen = held_out[: settings.eval_examples]
    actions = [e for e in chosen if e.task == "action"]
    risks = [e for e in chosen if e.task == "risk"]
    metrics: dict[str, float] = {}
    for group, fn in (
        (actions, lambda a, g: action_metrics(a, [e.target for e in g])),
        (risks, lambda a, g: risk_metrics(a, [e.answer for e in g])),
    ):
        answers = []
        for start in range(0, len(group), settings.batch_size):
            answers += generate(model, processor, group[start : start + settings.batch_size], settings.max_new_tokens)
        if group:
            metrics.update(fn(answers, group))
    model.train()
    return metrics


# ------------------------------------------------------------------------------------------ training


def _held_out_mix(held_out: list[VlmExample], seed: int) -> list[VlmExample]:
    """Held-out examples in a fixed shuffled order, so each evaluation answers the same ones."""
    order = np.random.default_rng(seed + 1).permutation(len(held_out))
    return [held_out[i] for i in order]


def _lr_at(step: int, s: FinetuneSettings) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(s.steps - s.warmup_steps, 1)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def load_base(base: Path, lora_rank: int, device: str = "cpu", dtype: str = "float32"):
    define_ops()
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(base, dtype=getattr(torch, dtype)).to(device)
    processor = AutoProcessor.from_pretrained(base)
    if lora_rank > 0:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as err:
            raise ImportError("--lora-rank needs the peft package (pip install peft)") from err
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora_rank,
                lora_alpha=2 * lora_rank,
                lora_dropout=0.0,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            ),
        )
    return model, processor


def finetune(base: Path, dataset: Path, out: Path, settings: FinetuneSettings) -> dict:
    import torch

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already holds files; choose a new --out or delete it first")
    torch.set_num_threads(settings.torch_threads)
    torch.manual_seed(settings.seed)
    train, held_out = build_examples(dataset, settings.frames, settings.risk_share, settings.seed)
    held_out = _held_out_mix(held_out, settings.seed)
    log.info("%d training and %d held-out examples from %s", len(train), len(held_out), dataset)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if settings.device == "auto" else settings.device
    model, processor = load_base(base, settings.lora_rank, device, settings.dtype)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    rng = np.random.default_rng(settings.seed)
    curve: list[dict] = []
    losses: list[float] = []
    started = time.monotonic()
    for step in range(settings.steps):
        batch = [train[i] for i in rng.integers(0, len(train), settings.batch_size)]
        for group in optimiser.param_groups:
            group["lr"] = _lr_at(step, settings)
        loss = model(**collate(processor, batch).to(device)).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        losses.append(loss.item())
        if (step + 1) % settings.log_every == 0:
            elapsed = time.monotonic() - started
            log.info(
                "step %d/%d | loss %.3f | %.2f steps/s",
                step + 1,
                settings.steps,
                np.mean(losses[-settings.log_every :]),
                (step + 1) / elapsed,
            )
        if (step + 1) % settings.eval_every == 0 or step + 1 == settings.steps:
            point = {
                "step": step + 1,
                "loss": float(np.mean(losses[-settings.eval_every :])),
                "elapsed_s": time.monotonic() - started,
                **evaluate(model, processor, held_out, settings),
            }
            curve.append(point)
            log.info(
                "step %d/%d | %s",
                step + 1,
                settings.steps,
                " ".join(f"{k} {v:.3f}" for k, v in point.items() if k != "step"),
            )
    if settings.lora_rank > 0:
        model = model.merge_and_unload()  # vLLM serves the merged weights
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    report = {
        "base": str(base),
        "dataset": str(dataset),
        "settings": asdict(settings),
        "examples": {"train": len(train), "held_out": len(held_out)},
        "final": curve[-1],
        "curve": curve,
    }
    (out / "finetune.json").write_text(json.dumps(report, indent=2))
    plot_curve(curve, out / "learning_curve.png")
    return report


def plot_curve(curve: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p["step"] for p in curve]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(steps, [p["loss"] for p in curve], marker="o")
    left.set(xlabel="step", ylabel="training loss (answer tokens)", yscale="log", title="loss")
    for key in ("parse_rate", "agreement", "mae_acc", "mae_steer", "risk_exact", "risk_clear_agreement"):
        if any(key in p for p in curve):
            right.plot(steps, [p.get(key, math.nan) for p in curve], marker="o", label=key)
    right.set(xlabel="step", title="held-out answers (greedy)", ylim=(0, 1.05))
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="a dataset directory written by collect.py")
    parser.add_argument("--out", type=Path, required=True, help="a new directory for the fine-tuned model")
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        help="a local Hugging Face VLM; default: a new one built by teacher_training.vlm_build in <out>-base",
    )
    defaults = FinetuneSettings()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = FinetuneSettings(**{name: getattr(args, name) for name in asdict(defaults)})
    base = args.base
    if base is None:
        from teacher_training.vlm_build import build

        base = build(args.out.with_name(args.out.name + "-base"), seed=settings.seed)
    report = finetune(base, args.dataset, args.out, settings)
    log.info("final held-out metrics: %s", json.dumps(report["final"]))


if __name__ == "__main__":
    main()
