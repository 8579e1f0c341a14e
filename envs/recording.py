"""Animated GIFs of BEV rollouts with speed, command and reward drawn on each frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from envs.types import RouteCommand


class GifRecorder:
    def __init__(self, scale: int = 2, every: int = 2, sim_fps: int = 10):
        """Keeps every `every`-th frame and plays back in real time (GIF encoding is slow)."""
        self._frames: list[Image.Image] = []
        self._scale, self._every, self._fps = scale, every, sim_fps / every
        self._seen = 0

    def add(self, rgb: np.ndarray, speed: float, command: int, reward: float) -> None:
        self._seen += 1
        if (self._seen - 1) % self._every:
            return
        size = rgb.shape[1] * self._scale, rgb.shape[0] * self._scale
        frame = Image.fromarray(rgb).resize(size, Image.NEAREST)
        draw = ImageDraw.Draw(frame)
        lines = [f"{speed * 3.6:5.1f} km/h", RouteCommand(command).phrase, f"reward {reward:+.2f}"]
        draw.rectangle((0, 0, size[0], 14 * len(lines) + 4), fill=(0, 0, 0))
        for k, text in enumerate(lines):
            draw.text((4, 2 + 14 * k), text, fill=(255, 255, 255))
        self._frames.append(frame)

    def save(self, path: str | Path) -> Path:
        if not self._frames:
            raise ValueError("no frames recorded: add() frames before save()")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._frames[0].save(
            path, save_all=True, append_images=self._frames[1:], duration=int(1000 / self._fps), loop=0, optimize=False
        )
        return path
