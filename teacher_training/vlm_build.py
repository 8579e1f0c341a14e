"""Build a small Qwen2-VL from a config, with a tokenizer and a processor trained and made locally.

Nothing can come from a model hub here, so the CPU tier's VLM is built from nothing:
- a byte-level BPE tokenizer (the `tokenizers` library) trained on the texts the VLM will read and
  write: the driving prompt over a grid of speeds, commands and headings, JSON answers, the risk
  question and risk descriptions; with Qwen2-VL's special tokens and chat template;
- Qwen2-VL's image processor fixed to one resolution (the 192 px BEV resized to 196 px: 49 image
  tokens a frame) and its video processor (the processor class needs one; Mentor sends no video);
- a randomly initialised Qwen2VLForConditionalGeneration from a preset in teacher_training/vlm_configs/.

The directory it writes is a complete Hugging Face model that both transformers (fine-tuning,
teacher_training/vlm_finetune.py) and vLLM (serving, feedback/vlm_advisor.py) load by path.

    python -m teacher_training.vlm_build --out artifacts/vlm/base      # then python -m teacher_training.vlm_finetune
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from envs.types import RouteCommand
from feedback.torchvision_ops import define_ops
from feedback.vlm_prompt import build_prompt, build_risk_prompt, format_action
from teacher_training.vlm_data import RISK_TEMPLATES_CORPUS

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "vlm_configs"
DEFAULT_PRESET = "MentorQwen2VL-Tiny"
PAD, EOS = "<|endoftext|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, "<|im_start|>", EOS, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
# Qwen2-VL's chat template, without the default system prompt (the tiny model has no use for it).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def load_preset(name: str) -> dict:
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise ValueError(f"VLM preset {name!r} does not exist ({path}); known presets: {', '.join(known)}")
    return json.loads(path.read_text())


def tokenizer_corpus(seed: int = 0) -> Iterator[str]:
    """Texts covering what the VLM reads and writes (the tokenizer's merges are learnt from them)."""
    rng = np.random.default_rng(seed)
    for command in RouteCommand:
        for speed in np.linspace(0.0, 10.0, 21):
            heading = rng.uniform(-np.pi, np.pi)
            yield build_prompt(float(speed), (float(np.cos(heading)), float(np.sin(heading))), int(command))
    for _ in range(3000):
        yield format_action(rng.uniform(-1.0, 1.0, size=2))
    for frames in (1, 2, 3, 4):
        yield build_risk_prompt(frames)
    yield from RISK_TEMPLATES_CORPUS
    yield "user assistant system"


def build_tokenizer(vocab_size: int, seed: int = 0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(tokenizer_corpus(seed), trainer)
    tokenizer = Qwen2TokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=PAD, unk_token=None, bos_token=None)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer, image_pixels: int):
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    # min = max pixels: every frame is resized to the same grid, so a prompt's length is fixed.
    image_processor = Qwen2VLImageProcessor(min_pixels=image_pixels, max_pixels=image_pixels)
    video_processor = Qwen2VLVideoProcessor(min_pixels=image_pixels, max_pixels=image_pixels)
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def model_config(preset: dict, tokenizer):
    from transformers import Qwen2VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    text, vision = dict(preset["text"]), dict(preset["vision"])
    mrope = text.pop("mrope_section")
    return Qwen2VLConfig(
        text_config=dict(
            text,
            vocab_size=len(tokenizer),
            rope_scaling={"type": "mrope", "mrope_section": mrope},
            bos_token_id=ids[PAD],
            eos_token_id=ids[EOS],
            pad_token_id=ids[PAD],
            tie_word_embeddings=True,
        ),
        vision_config=dict(vision, hidden_size=text["hidden_size"]),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build(out: Path, preset_name: str = DEFAULT_PRESET, seed: int = 0) -> Path:
    """Write a randomly initialised VLM, its tokenizer and processor to `out` (a new directory)."""
    define_ops()
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already holds files; choose a new --out or delete it first")
    preset = load_preset(preset_name)
    tokenizer = build_tokenizer(preset["vocab_size"], seed)
    processor = build_processor(tokenizer, preset["image_pixels"])
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(model_config(preset, tokenizer))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "mentor_vlm.json").write_text(json.dumps({"preset": preset_name, "seed": seed}, indent=2))
    log.info(
        "built %s (%.2f M parameters, vocabulary %d) in %s",
        preset_name,
        sum(p.numel() for p in model.parameters()) / 1e6,
        len(tokenizer),
        out,
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a new directory for the model")
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="a JSON file name in teacher_training/vlm_configs/")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    build(args.out, args.preset, args.seed)


if __name__ == "__main__":
    main()
