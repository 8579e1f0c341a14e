"""The BEV (masks and RGB) on fixed seeds shows what the renderer drew before the speed work of
issue 16, on any CPU.

tests/data/bev_golden/<town>-<traffic>-<route>-<seed>.npz holds every step's masks and RGB image
(`python -m tests.test_bev_golden --write`, run at a commit whose BEV is known good, never to hide
a change). They were written with OpenCV's baseline kernels (cv2.setUseOptimized(False)), which on
the writing machine reproduce the SHA-256 digests that commit a00ae69's renderer had recorded at
601 of the 602 steps (the other differs in a single pixel). Pictures are compared by what they must
show (tests/bev_pictures.py: boundaries may move by one pixel, on at most 0.5% of a picture),
because OpenCV's run-time SIMD kernels round differently on different CPUs. A change of what the
BEV shows fails here with the first step that differs and what differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.bev_pictures import masks_differences, rgb_differences

GOLDEN_DIR = Path(__file__).parent / "data" / "bev_golden"
CASES = (("Town01", "regular", 0, 0), ("Town02", "dense", 3, 1))  # town, traffic, route, seed
STEPS = 300


def golden_path(town: str, traffic: str, route: int, seed: int) -> Path:
    return GOLDEN_DIR / f"{town}-{traffic}-{route}-{seed}.npz"


def load_golden(town: str, traffic: str, route: int, seed: int) -> dict[str, np.ndarray]:
    """{"masks", "rgb"} in memory (an NpzFile decompresses a whole array at every index)."""
    with np.load(golden_path(town, traffic, route, seed)) as data:
        return {key: data[key] for key in data.files}


def bev_episode(
    town: str, traffic: str, route: int, seed: int, steps: int = STEPS, rgb: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Masks [T, 15, 96, 96] and RGB images [T, 192, 192, 3] (None without `rgb`) of every step (the
    reset included) of the expert driving `route` of the town's shipped suite."""
    from envs.driving_env import DrivingEnv
    from envs.expert import expert_action

    env = DrivingEnv(town=town, traffic=traffic, seed=seed, rgb_bev=rgb)
    try:
        obs, info = env.reset(seed=seed, options={"route": route})
        masks, images = [obs["bev"]], [info.get("rgb_bev")]
        for _ in range(steps):
            obs, _, terminated, truncated, info = env.step(expert_action(*env.ground_truth()))
            masks.append(obs["bev"])
            images.append(info.get("rgb_bev"))
            if terminated or truncated:
                break
    finally:
        env.close()
    return np.stack(masks), (np.stack(images) if rgb else None)


def first_difference(masks: np.ndarray, images: np.ndarray | None, golden) -> str | None:
    """The first step whose masks (or RGB image) do not show what the golden ones show, in words."""
    if len(masks) != len(golden["masks"]):
        return f"the episode has {len(masks)} steps, the golden one {len(golden['masks'])}"
    for step in range(len(masks)):
        found = masks_differences(masks[step], golden["masks"][step])
        if found is None and images is not None:
            found = rgb_differences(images[step], golden["rgb"][step])
        if found:
            return f"step {step}: {found}"
    return None


@pytest.mark.sim
@pytest.mark.parametrize("town, traffic, route, seed", CASES)
def test_the_bev_is_drawn_as_before(request, town, traffic, route, seed):
    request.getfixturevalue(town.lower())  # the map, or a skip (a failure in CI)
    golden = load_golden(town, traffic, route, seed)
    masks, images = bev_episode(town, traffic, route, seed)
    assert first_difference(masks, images, golden) is None


@pytest.mark.sim
def test_without_the_rgb_image_the_masks_are_the_same_and_info_has_no_image(town01):
    """Workers that never read info["rgb_bev"] leave it out (DrivingSettings.rgb_bev); their
    observations are the golden ones all the same."""
    from envs.driving_env import DrivingEnv
    from envs.expert import expert_action

    golden = load_golden("Town01", "regular", 0, 0)
    masks, _ = bev_episode("Town01", "regular", 0, 0, steps=40, rgb=False)
    assert first_difference(masks, None, {"masks": golden["masks"][:41]}) is None
    env = DrivingEnv(town="Town01", traffic="regular", seed=0, rgb_bev=False)
    try:
        _, info = env.reset(seed=0, options={"route": 0})
        _, _, _, _, info = env.step(expert_action(*env.ground_truth()))
        assert "rgb_bev" not in info
    finally:
        env.close()


def write_golden() -> None:
    import cv2

    cv2.setUseOptimized(False)  # OpenCV's baseline kernels: see the module's docstring
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        masks, images = bev_episode(*case)
        np.savez_compressed(golden_path(*case), masks=masks, rgb=images)
        print(golden_path(*case), len(masks), "steps")


if __name__ == "__main__" and "--write" in sys.argv:
    write_golden()


@pytest.mark.parametrize(
    "overrides, extra, reads",
    [
        ([], None, False),  # the expert advisor: privileged state only
        (
            ["feedback.model=expert+clip", "feedback.wanted=[vlm_action,clip_margin]"],
            None,
            True,
        ),  # CLIP reads the image
        ([], {"rgb_bev": ((192, 192, 3), np.dtype(np.uint8))}, True),  # a collection stores it
    ],
)
def test_workers_render_the_rgb_image_only_when_something_reads_it(overrides, extra, reads):
    from configs.loader import load_config
    from workers.assembly import worker_reads_rgb_bev

    assert worker_reads_rgb_bev(load_config(None, overrides), extra) is reads
