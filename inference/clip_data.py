"""Driving data for CLIP: BEV images with captions synthesised from the discretised command, speed
and the expert's action (Found-RL appendix), stored as Parquet.

The expert drives. With `perturb` > 0 the executed action is sometimes the expert's plus a held
random offset (DART-style), so the data holds recoveries too, but the caption always describes what
the expert would do in that state: CLIP learns which behaviour fits a scene. As in Found-RL, the
steps just before a collision are not kept.

    python -m inference.clip_data --out data/clip/town01.parquet --steps 6000
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from envs.types import RouteCommand
from inference.clip_prompts import LATERAL, action_index, context_index, prompt, speed_bin

logger = logging.getLogger(__name__)

SCHEMA = pa.schema([
    ("image_png", pa.binary()),  # RGB BEV, 192 x 192
    ("caption", pa.string()),
    ("command", pa.int8()),
    ("speed", pa.float32()),
    ("expert_action", pa.list_(pa.float32(), 2)),
    ("executed_action", pa.list_(pa.float32(), 2)),
    ("context", pa.int16()),  # (command, speed bin) context, 0..23
    ("action_class", pa.int16()),  # the caption's behaviour among its context's 30, 0..29
    ("town", pa.string()),
    ("episode", pa.int32()),
    ("step", pa.int32()),
])
_PRE_COLLISION_STEPS = 10  # Found-RL drops a short segment before each collision


@dataclass(frozen=True)
class CollectSettings:
    town: str | None = None
    traffic: str = "regular"
    route_suite: str | None = "random"  # random routes: more varied scenes than a fixed suite
    steps: int = 6000
    max_episode_steps: int = 500  # short episodes: more routes, towns' corners and starts per dataset
    perturb: float = 0.1  # chance per step of starting a perturbation of the executed action
    seed: int = 0
    maps_dir: str | None = None


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not PNG-encode an image of shape {rgb.shape}")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("a dataset row holds bytes that are not a PNG image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def caption_row(rgb: np.ndarray, command: int, speed: float, expert: np.ndarray, executed: np.ndarray,
                town: str, episode: int, step: int) -> dict:
    context, action = context_index(command, speed), action_index(expert)
    caption = prompt(RouteCommand(command), speed_bin(speed), *divmod(action, len(LATERAL)))
    return {"image_png": encode_png(rgb), "caption": caption, "command": command, "speed": speed,
            "expert_action": expert.tolist(), "executed_action": executed.tolist(), "context": context,
            "action_class": action, "town": town, "episode": episode, "step": step}


class _Perturbation:
    """A random offset held for a few steps, started with probability `rate` per step."""

    def __init__(self, rate: float, rng: np.random.Generator):
        self._rate, self._rng = rate, rng
        self._offset, self._left = np.zeros(2, np.float32), 0

    def __call__(self, action: np.ndarray) -> np.ndarray:
        if self._left == 0 and self._rng.random() < self._rate:
            self._offset = self._rng.uniform([-0.6, -0.4], [0.6, 0.4]).astype(np.float32)
            self._left = int(self._rng.integers(3, 12))
        if self._left == 0:
            return action
        self._left -= 1
        return np.clip(action + self._offset, -1.0, 1.0).astype(np.float32)


def collect(out: str | Path, settings: CollectSettings = CollectSettings()) -> dict:
    """Drive the expert for `settings.steps` kept steps and write them to `out` (Parquet)."""
    import envs
    from envs.expert import expert_action

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = envs.make_env(town=settings.town, traffic=settings.traffic, route_suite=settings.route_suite,
                        seed=settings.seed, maps_dir=settings.maps_dir)
    perturb = _Perturbation(settings.perturb, np.random.default_rng(settings.seed))
    town = env.unwrapped.config.town
    kept, episodes, started = 0, 0, time.monotonic()
    tmp = out.with_name(out.name + ".tmp")
    with pq.ParquetWriter(tmp, SCHEMA) as writer:
        try:
            while kept < settings.steps:
                rows = _episode(env, expert_action, perturb, town, episodes, settings, settings.steps - kept)
                if rows:
                    writer.write_table(pa.Table.from_pylist(rows, schema=SCHEMA))
                kept, episodes = kept + len(rows), episodes + 1
                logger.info("collected %d/%d steps (%d episodes, %.0f s)", kept, settings.steps, episodes,
                            time.monotonic() - started)
        finally:
            env.close()
    tmp.replace(out)
    return {"rows": kept, "episodes": episodes, "town": town, "seconds": time.monotonic() - started}


def _episode(env, expert_action, perturb: _Perturbation, town: str, episode: int,
             settings: CollectSettings, limit: int) -> list[dict]:
    _, info = env.reset(seed=settings.seed + episode)
    rows: list[dict] = []
    for step in range(settings.max_episode_steps):
        if len(rows) >= limit + _PRE_COLLISION_STEPS:
            return rows[:limit]
        expert = np.asarray(expert_action(*env.unwrapped.ground_truth()), np.float32)
        executed = perturb(expert)
        rows.append(caption_row(info["rgb_bev"], int(info["command"]), float(info["speed"]), expert, executed,
                                town, episode, step))
        _, _, terminated, truncated, info = env.step(executed)
        if any("collision" in name for name in info["infractions"]):
            return rows[:-_PRE_COLLISION_STEPS]
        if terminated or truncated:
            break
    return rows[:limit]


# ------------------------------------------------------------------------------------------- reading
def read_dataset(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The table, after checking it has the columns this module writes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP dataset {path} not found; collect one with "
                                f"`python -m inference.clip_data --out {path}`")
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path} cannot be read as a Parquet dataset ({type(err).__name__}: {err}); it is "
                         f"damaged or not Parquet: collect it again with `python -m inference.clip_data --out "
                         f"{path}`") from err
    missing = [name for name in (columns or SCHEMA.names) if name not in table.column_names]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}: it was not written by inference.clip_data")
    return table


def label_safety(path: str | Path, scorer, batch_size: int = 256) -> Path:
    """Add (or replace) a `safety` column: the CLIP safety probability of each row's image.

    `scorer` maps uint8 images [B, 192, 192, 3] to probabilities [B] (ClipFeedback.image_safety).
    The file is rewritten atomically: a failure leaves the original untouched.
    """
    path = Path(path)
    table = read_dataset(path)
    images = table.column("image_png").to_pylist()
    scores = np.concatenate([scorer(np.stack([decode_png(b) for b in images[i:i + batch_size]]))
                             for i in range(0, len(images), batch_size)]) if images else np.zeros(0)
    if "safety" in table.column_names:
        table = table.drop_columns(["safety"])
    table = table.append_column("safety", pa.array(scores.astype(np.float32), pa.float32()))
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=CollectSettings.steps)
    parser.add_argument("--town", default=None)
    parser.add_argument("--traffic", default="regular", choices=["empty", "regular", "dense"])
    parser.add_argument("--perturb", type=float, default=CollectSettings.perturb)
    parser.add_argument("--episode-steps", type=int, default=CollectSettings.max_episode_steps)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    summary = collect(args.out, CollectSettings(town=args.town, traffic=args.traffic, steps=args.steps,
                                                max_episode_steps=args.episode_steps, perturb=args.perturb,
                                                seed=args.seed))
    logger.info("wrote %s: %s", args.out, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
