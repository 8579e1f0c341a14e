"""Comparing BEV pictures by what they must show, not by one CPU's bits.

OpenCV picks its SIMD kernels (SSE4, AVX2, AVX-512, NEON) at run time, and its warp and drawing
kernels do not round every coordinate the same way: measured on a 2-core AMD EPYC against the
machine that recorded tests/data/bev_golden/*.npz, 3 of 602 steps' masks differ in 1-2 road or
lane pixels (of 36,864 at 192 px) and 9 RGB images in as few. So a picture is compared as a
person would: every differing pixel must be a boundary moved by at most one pixel (the value it
now has is next to it in the reference, and the value the reference has is next to it now), and
at most `MAX_MOVED_FRACTION` of a picture's pixels may differ at all.

That still fails for anything that changes what the BEV shows: an object that vanishes or appears
(its pixels have no such neighbour), a wrong colour or channel value, a shifted frame, a thicker
route or a wider box (hundreds of pixels move, far over the cap: a route 2 px thicker at 192 px moves
about 800 of them over 80 m).
"""

from __future__ import annotations

import numpy as np

# At most this fraction of a picture's pixels (per mask channel, or of the RGB image) may differ,
# each only as a boundary moved by one pixel: 0.5% is 46 pixels of a 96 px channel, 184 of the
# 192 px RGB image, against 1-2 measured between CPUs.
MAX_MOVED_FRACTION = 0.005


def _neighbourhood_has(values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Bool [H, W]: whether `wanted[r, c]` occurs in `values`' 3x3 neighbourhood of (r, c)."""
    padded = np.pad(values, 1, mode="edge")
    height, width = values.shape
    found = np.zeros(values.shape, dtype=bool)
    for dr in range(3):
        for dc in range(3):
            found |= padded[dr : dr + height, dc : dc + width] == wanted
    return found


def _colour_ids(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [H, W] uint32, one id per colour."""
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def picture_differences(got: np.ndarray, want: np.ndarray) -> str | None:
    """None when the 2-D pictures `got` and `want` show the same thing (see the module's rule), else
    what differs, in words."""
    if got.shape != want.shape:
        return f"shape {got.shape} against {want.shape}"
    differ = got != want
    count = int(differ.sum())
    if count == 0:
        return None
    limit = int(MAX_MOVED_FRACTION * got.size)
    if count > limit:
        return f"{count} pixels differ (at most {limit} may, as boundaries moved by one pixel)"
    moved = _neighbourhood_has(want, got) & _neighbourhood_has(got, want)
    stray = differ & ~moved
    if stray.any():
        rows, cols = np.nonzero(stray)
        return (
            f"{int(stray.sum())} pixels differ from everything around them, first at (row {rows[0]}, col "
            f"{cols[0]}): {got[rows[0], cols[0]]} where the reference has {want[rows[0], cols[0]]}"
        )
    return None


def masks_differences(got: np.ndarray, want: np.ndarray) -> str | None:
    """Masks [C, H, W]: each channel compared as a picture."""
    if got.shape != want.shape:
        return f"masks of shape {got.shape} against {want.shape}"
    for channel, (g, w) in enumerate(zip(got, want)):
        found = picture_differences(g, w)
        if found:
            return f"mask channel {channel}: {found}"
    return None


def rgb_differences(got: np.ndarray, want: np.ndarray) -> str | None:
    """RGB [H, W, 3]: one picture of colours."""
    if got.shape != want.shape:
        return f"RGB image of shape {got.shape} against {want.shape}"
    found = picture_differences(_colour_ids(got), _colour_ids(want))
    return f"RGB image: {found}" if found else None
