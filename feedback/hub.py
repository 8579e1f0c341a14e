"""Hugging Face hub settings read straight from the environment (no huggingface_hub import, which
alone takes ~0.3 s: a missing model must fail faster than that)."""

from __future__ import annotations

import os
from pathlib import Path


def hub_offline() -> bool:
    """HF_HUB_OFFLINE set to a true value, as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment as huggingface_hub does."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hub_model_cached(repo_id: str) -> bool:
    """Whether a model repo has a snapshot in the cache (layout models--org--name/snapshots/<rev>/)."""
    repo_dir = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    return any((repo_dir / "snapshots").glob("*/config.json"))
