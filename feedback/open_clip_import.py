"""Import open_clip on a CPU-only torch (feedback/torchvision_ops.py), and register Mentor's own
CLIP architectures."""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType

from feedback.torchvision_ops import define_ops

CONFIG_DIR = Path(__file__).resolve().parent / "clip_configs"  # MentorCLIP-*.json


def import_open_clip() -> ModuleType:
    return _load()


@functools.cache
def _load() -> ModuleType:
    define_ops()
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    return open_clip
