"""The BEV (masks and RGB) on fixed seeds equals what the renderer drew before the speed work of
issue 16: tests/data/bev_golden.json holds a SHA-256 per step of both images, written by the code
of commit a00ae69 with `python tests/test_bev_golden.py --write` (run it there, never to hide a
change). A change of what the BEV shows fails here with the first step that differs."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "data" / "bev_golden.json"
CASES = (("Town01", "regular", 0, 0), ("Town02", "dense", 3, 1))  # town, traffic, route, seed
STEPS = 300


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def bev_trace(town: str, traffic: str, route: int, seed: int, steps: int = STEPS) -> list[list[str]]:
    """[masks digest, rgb digest] per step (the reset included) of the expert driving `route` of
    the town's shipped suite."""
    from envs.driving_env import DrivingEnv
    from envs.expert import expert_action

    env = DrivingEnv(town=town, traffic=traffic, seed=seed)
    try:
        obs, info = env.reset(seed=seed, options={"route": route})
        trace = [[_digest(obs["bev"]), _digest(info["rgb_bev"])]]
        for _ in range(steps):
            obs, _, terminated, truncated, info = env.step(expert_action(*env.ground_truth()))
            trace.append([_digest(obs["bev"]), _digest(info["rgb_bev"])])
            if terminated or truncated:
                break
    finally:
        env.close()
    return trace


@pytest.mark.sim
@pytest.mark.parametrize("town, traffic, route, seed", CASES)
def test_the_bev_is_drawn_as_before(request, town, traffic, route, seed):
    request.getfixturevalue(town.lower())  # the map, or a skip (a failure in CI)
    expected = json.loads(GOLDEN.read_text())[f"{town}-{traffic}-{route}-{seed}"]
    trace = bev_trace(town, traffic, route, seed)
    assert len(trace) == len(expected)
    for step, (got, want) in enumerate(zip(trace, expected)):
        assert got == want, f"step {step}: masks/rgb digests {got} differ from the golden {want}"


if __name__ == "__main__" and "--write" in sys.argv:
    golden = {f"{town}-{traffic}-{route}-{seed}": bev_trace(town, traffic, route, seed)
              for town, traffic, route, seed in CASES}
    GOLDEN.write_text(json.dumps(golden))
    print({key: len(trace) for key, trace in golden.items()})


@pytest.mark.sim
def test_without_the_rgb_image_the_masks_are_the_same_and_info_has_no_image(town01):
    """Workers that never read info["rgb_bev"] leave it out (DrivingSettings.rgb_bev); their
    observations are the golden ones all the same."""
    from envs.driving_env import DrivingEnv
    from envs.expert import expert_action

    expected = [masks for masks, _ in json.loads(GOLDEN.read_text())["Town01-regular-0-0"][:41]]
    env = DrivingEnv(town="Town01", traffic="regular", seed=0, rgb_bev=False)
    try:
        obs, info = env.reset(seed=0, options={"route": 0})
        trace = [_digest(obs["bev"])]
        for _ in range(40):
            obs, _, _, _, info = env.step(expert_action(*env.ground_truth()))
            trace.append(_digest(obs["bev"]))
            assert "rgb_bev" not in info
    finally:
        env.close()
    assert trace == expected


@pytest.mark.parametrize("overrides, extra, reads", [
    ([], None, False),                                                     # the expert advisor: privileged state only
    (["feedback.model=expert+clip", "feedback.wanted=[vlm_action,clip_margin]"], None, True),  # CLIP reads the image
    ([], {"rgb_bev": ((192, 192, 3), np.dtype(np.uint8))}, True),           # a collection stores it
])
def test_workers_render_the_rgb_image_only_when_something_reads_it(overrides, extra, reads):
    from actors.assembly import worker_reads_rgb_bev
    from configs.loader import load_config

    assert worker_reads_rgb_bev(load_config(None, overrides), extra) is reads
