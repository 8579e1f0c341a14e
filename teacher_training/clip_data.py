"""Driving data for CLIP: BEV images with captions synthesised from the discretised command, speed
and the expert's action (Found-RL appendix), stored as Parquet, derived from a transition dataset
(collect.py): no collection loop of its own.

The data come from the expert with DART perturbations, so they hold recoveries too, but the caption
always describes what the expert would do in that state: CLIP learns which behaviour fits a scene.
As in Found-RL, the steps just before an infraction that ended an episode are not kept.

    python collect.py --config configs/collect/clip.yaml collect.output=data/town01      # transitions
    python -m teacher_training.clip_data --transitions data/town01 --out data/clip/town01.parquet
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from envs.types import RouteCommand
from feedback.clip_prompts import LATERAL, action_index, context_index, prompt, speed_bin

logger = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
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
    ]
)
_PRE_COLLISION_STEPS = 10  # Found-RL drops a short segment before each collision


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


def caption_row(
    rgb: np.ndarray,
    command: int,
    speed: float,
    expert: np.ndarray,
    executed: np.ndarray,
    town: str,
    episode: int,
    step: int,
) -> dict:
    context, action = context_index(command, speed), action_index(expert)
    caption = prompt(RouteCommand(command), speed_bin(speed), *divmod(action, len(LATERAL)))
    return {
        "image_png": encode_png(rgb),
        "caption": caption,
        "command": command,
        "speed": speed,
        "expert_action": expert.tolist(),
        "executed_action": executed.tolist(),
        "context": context,
        "action_class": action,
        "town": town,
        "episode": episode,
        "step": step,
    }


def captions_from_transitions(dataset_dir: str | Path, out: str | Path) -> dict:
    """The caption table of a transition dataset (collect.py, dataset/): one row per transition
    that has the expert's label, with the RGB BEV the env rendered and the caption of what the
    expert did there (the executed action may carry a DART perturbation). As in Found-RL, the
    steps just before an episode that ended in an infraction are not kept."""
    from dataset.parquet import DatasetError, ParquetDataset

    data = ParquetDataset(dataset_dir)
    town = str(data.metadata.get("town"))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept, episodes = 0, set()
    tmp = out.with_name(out.name + ".tmp")
    with pq.ParquetWriter(tmp, SCHEMA) as writer:
        for shard in data.shards:
            chunk = data.read_shard(shard, extra=True)
            if "rgb_bev" not in chunk or "command" not in chunk:
                raise DatasetError(f"{shard.path} has no rgb_bev/command columns: collect the dataset with collect.py")
            rows = [
                caption_row(
                    chunk["rgb_bev"][i],
                    int(chunk["command"][i]),
                    float(chunk["state"][i, 4]),
                    chunk["expert_action"][i],
                    chunk["action"][i],
                    town,
                    int(chunk["episode_id"][i]),
                    int(chunk["step"][i]),
                )
                for i in np.flatnonzero(_kept_rows(chunk))
            ]
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=SCHEMA))
            kept += len(rows)
            episodes.update(int(e) for e in chunk["episode_id"])
    tmp.replace(out)
    logger.info("wrote %s: %d captioned steps of %d episodes from %s", out, kept, len(episodes), dataset_dir)
    return {"rows": kept, "episodes": len(episodes), "town": town}


def _kept_rows(chunk: dict) -> np.ndarray:
    """Transitions with an expert label, without the last steps of episodes that ended in an infraction."""
    keep = ~chunk["is_last"] & (chunk["expert_action_mask"] > 0)
    ended_badly = np.flatnonzero(chunk["terminated"] & ~chunk["is_last"] & (chunk["cost"] > 0))
    for end in ended_badly:
        same = chunk["episode_id"] == chunk["episode_id"][end]
        keep &= ~(
            same & (chunk["step"] > chunk["step"][end] - _PRE_COLLISION_STEPS) & (chunk["step"] <= chunk["step"][end])
        )
    return keep


# ------------------------------------------------------------------------------------------- reading
def read_dataset(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The table, after checking it has the columns this module writes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"CLIP dataset {path} not found; collect one with `python -m teacher_training.clip_data --out {path}`"
        )
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(
            f"{path} cannot be read as a Parquet dataset ({type(err).__name__}: {err}); it is "
            f"damaged or not Parquet: collect it again with `python -m teacher_training.clip_data --out "
            f"{path}`"
        ) from err
    missing = [name for name in (columns or SCHEMA.names) if name not in table.column_names]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}: it was not written by teacher_training.clip_data")
    return table


def label_safety(path: str | Path, scorer, batch_size: int = 256) -> Path:
    """Add (or replace) a `safety` column: the CLIP safety probability of each row's image.

    `scorer` maps uint8 images [B, 192, 192, 3] to probabilities [B] (ClipFeedback.image_safety).
    The file is rewritten atomically: a failure leaves the original untouched.
    """
    path = Path(path)
    table = read_dataset(path)
    images = table.column("image_png").to_pylist()
    scores = (
        np.concatenate(
            [
                scorer(np.stack([decode_png(b) for b in images[i : i + batch_size]]))
                for i in range(0, len(images), batch_size)
            ]
        )
        if images
        else np.zeros(0)
    )
    if "safety" in table.column_names:
        table = table.drop_columns(["safety"])
    table = table.append_column("safety", pa.array(scores.astype(np.float32), pa.float32()))
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transitions", required=True, help="a transition dataset directory (collect.py)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    captions_from_transitions(args.transitions, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
