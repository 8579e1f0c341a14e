"""Import open_clip on a CPU-only torch, and register Mentor's own CLIP architectures.

The only torchvision wheel for torch 2.13.0 is a CUDA build; with CPU torch its import fails with
"operator torchvision::nms does not exist" because its fake-tensor registrations look the C++ ops
up. Defining the two op schemas first lets the import finish; open_clip never calls them.
"""
from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType

CONFIG_DIR = Path(__file__).resolve().parent / "clip_configs"  # MentorCLIP-*.json


def import_open_clip() -> ModuleType:
    return _load()[0]


@functools.cache
def _load() -> tuple[ModuleType, object]:
    """(open_clip, the op library): the cache keeps the library alive, which keeps the ops defined."""
    import torch

    library = None
    if not _has_op("torchvision::nms"):
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    return open_clip, library


def _has_op(name: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(name, "")
        return True
    except RuntimeError:
        return False
