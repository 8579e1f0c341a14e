"""An open_clip model behind a small interface: encode BEV images, cache text embeddings.

Where the weights come from, in order: `checkpoint`, a directory in open_clip's `local-dir:` layout
(open_clip_config.json + weights; what `teacher_training.clip_training` writes); else `pretrained`, an
open_clip tag of `arch` (`laion2b_s34b_b88k`) or a weights file; else a randomly initialised `arch`
(throughput benchmarks only). Nothing is downloaded when HF_HUB_OFFLINE=1: a tag whose weights are
not in the local cache fails at once with what to do.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from feedback.hub import hub_offline
from feedback.open_clip_import import import_open_clip

logger = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


class ClipUnavailableError(RuntimeError):
    """The requested CLIP weights cannot be found (and may not be downloaded)."""


@dataclass(frozen=True)
class ClipSource:
    arch: str = "MentorCLIP-Tiny"
    pretrained: str | None = None  # an open_clip tag of `arch`, or a weights file
    checkpoint: str | None = None  # a local-dir checkpoint; wins over arch/pretrained

    def describe(self) -> str:
        if self.checkpoint:
            return f"checkpoint {self.checkpoint}"
        return f"{self.arch}/{self.pretrained or 'random init'}"


class ClipModel:
    """A frozen (eval-mode) CLIP model; `model` stays reachable for training."""

    def __init__(self, model: torch.nn.Module, tokenizer, arch: str, model_cfg: dict, name: str, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.arch, self.model_cfg, self.name = arch, model_cfg, name
        self.device = torch.device(device)
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", model.visual.image_size)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        self._mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), device=device).view(1, 3, 1, 1)
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}

    # ----- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, source: ClipSource, device: str = "cpu") -> ClipModel:
        open_clip = import_open_clip()
        if source.checkpoint:
            directory = check_checkpoint(source.checkpoint)
            model = open_clip.create_model(f"local-dir:{directory}", device=device)
            saved = json.loads((directory / CONFIG_FILE).read_text())
            arch = saved.get("arch", source.arch)
            tokenizer = open_clip.get_tokenizer(f"local-dir:{directory}")
            logger.info("CLIP %s loaded from %s", arch, directory)
            return cls(model, tokenizer, arch, saved["model_cfg"], f"{arch}@{directory.name}", device)
        if source.arch not in open_clip.list_models():
            raise ClipUnavailableError(
                f"unknown CLIP architecture {source.arch!r}; open_clip has e.g. ViT-B-16, "
                "ViT-B-32, and Mentor registers MentorCLIP-Tiny"
            )
        pretrained = _resolve_pretrained(open_clip, source.arch, source.pretrained)
        if pretrained is None:
            logger.warning("CLIP %s is randomly initialised (no checkpoint or pretrained weights given)", source.arch)
        model = open_clip.create_model(source.arch, pretrained=pretrained, device=device)
        return cls(
            model,
            open_clip.get_tokenizer(source.arch),
            source.arch,
            open_clip.get_model_config(source.arch),
            f"{source.arch}/{source.pretrained or 'random'}",
            device,
        )

    # ----- encoding --------------------------------------------------------------------------
    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [B, H, W, 3] RGB -> normalised float [B, 3, h, w] at the model's input size."""
        x = torch.as_tensor(np.ascontiguousarray(images), device=self.device).permute(0, 3, 1, 2).float() / 255.0
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False, antialias=True)
        return (x - self._mean) / self._std

    @torch.no_grad()
    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        """Unit-norm image embeddings [B, D]."""
        return self.model.encode_image(self.preprocess(images), normalize=True).float()

    @torch.no_grad()
    def encode_texts(self, texts) -> torch.Tensor:
        """Unit-norm text embeddings [N, D] of any texts, not kept (the tokenizer cuts each to CLIP's
        context length)."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        return torch.cat([self.model.encode_text(part, normalize=True).float() for part in tokens.split(256)])

    def text_embeddings(self, prompts: tuple[str, ...]) -> torch.Tensor:
        """Unit-norm text embeddings [P, D], computed once per prompt set and kept."""
        cached = self._text_cache.get(prompts)
        if cached is None:
            cached = self._text_cache[prompts] = self.encode_texts(prompts)
        return cached

    def forget_texts(self) -> None:
        """Drop cached text embeddings (after the weights changed, e.g. a training epoch)."""
        self._text_cache.clear()

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp().clamp(max=100.0))

    # ----- saving ----------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write an open_clip local-dir checkpoint that `ClipSource(checkpoint=...)` loads."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        preprocess = {
            "size": list(self.image_size),
            "mean": self._mean.flatten().tolist(),
            "std": self._std.flatten().tolist(),
        }
        config = {"arch": self.arch, "model_cfg": self.model_cfg, "preprocess_cfg": preprocess, **(extra or {})}
        save_model(self.model, str(directory / f"{WEIGHTS_FILE}.tmp"))
        (directory / f"{WEIGHTS_FILE}.tmp").replace(directory / WEIGHTS_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=1))
        return directory


def check_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory, or ClipUnavailableError saying how to make one."""
    directory = Path(path).expanduser()
    if not (directory / CONFIG_FILE).is_file():
        raise ClipUnavailableError(
            f"CLIP checkpoint {directory} not found (no {CONFIG_FILE} there). Train one with "
            f"`python -m teacher_training.clip_training --out {directory}` (see README), or set "
            "feedback.clip.checkpoint=null and feedback.clip.pretrained to an open_clip tag whose weights are cached"
        )
    return directory


def _resolve_pretrained(open_clip, arch: str, pretrained: str | None) -> str | None:
    """The `pretrained` argument for open_clip, after checking the weights can be had."""
    if not pretrained:
        return None
    if Path(pretrained).expanduser().is_file():
        return str(Path(pretrained).expanduser())
    tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not tag_cfg:
        if "/" in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors")):
            raise ClipUnavailableError(f"CLIP weights file {pretrained} not found")
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise ClipUnavailableError(f"{arch} has no pretrained tag {pretrained!r}; its tags: {tags}")
    if hub_offline() and not _weights_cached(tag_cfg):
        raise ClipUnavailableError(
            f"CLIP weights {arch}/{pretrained} are not in the local cache and HF_HUB_OFFLINE=1 forbids "
            f'downloading them. On a connected machine run `python -c "import open_clip; '
            f"open_clip.create_model('{arch}', pretrained='{pretrained}')\"` to fill the Hugging Face cache, "
            "or point feedback.clip.pretrained at a weights file / feedback.clip.checkpoint at a trained checkpoint"
        )
    return pretrained


def _weights_cached(tag_cfg: dict) -> bool:
    from huggingface_hub import try_to_load_from_cache

    hub = tag_cfg.get("hf_hub", "")
    if hub:
        repo_id, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in names)
    url = tag_cfg.get("url", "")
    return bool(url) and (Path.home() / ".cache" / "clip" / os.path.basename(url)).is_file()
