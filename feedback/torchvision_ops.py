"""torchvision's missing operator schemas on a CPU-only torch.

The only torchvision wheel for torch 2.13.0 is a CUDA build; with CPU torch its import fails with
"operator torchvision::nms does not exist" because its fake-tensor registrations look the C++ ops
up. Defining the two op schemas first lets the import finish; nothing Mentor runs calls them.

Two ways in:
- `define_ops()` before importing something that imports torchvision (feedback/open_clip_import.py);
- the VLM environment (scripts/bootstrap_vlm.sh) copies this file into its site-packages with a
  `.pth` line that calls `install_import_hook()` at interpreter start, so that every process of that
  environment is covered, including the subprocesses vLLM starts to inspect a model. The hook costs
  nothing until torchvision is imported, and imports torch only then.
"""

from __future__ import annotations

import importlib.abc
import sys

_LIBRARIES: list = []  # keeps the defining library alive, which keeps the ops defined


def _has_op(name: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(name, "")
        return True
    except RuntimeError:
        return False


def define_ops() -> None:
    """Define torchvision::nms and ::qnms on a CPU-only torch, unless something already has. A CUDA
    (or ROCm) torch is left alone: its matching torchvision registers the real ops when it loads,
    and a schema defined first would make that registration fail."""
    import torch

    if torch.version.cuda or getattr(torch.version, "hip", None):
        return
    if _LIBRARIES or _has_op("torchvision::nms"):
        return
    library = torch.library.Library("torchvision", "DEF")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARIES.append(library)


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Defines the ops the first time `torchvision` is imported. It stays in sys.meta_path (removing
    itself while importlib walks that list would skip the next finder) and does nothing after."""

    done = False

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" and not self.done:
            self.done = True
            define_ops()
        return None  # the normal finders import the module


def install_import_hook() -> None:
    if not any(isinstance(finder, _BeforeTorchvision) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())
