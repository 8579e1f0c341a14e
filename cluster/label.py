"""Label a transition dataset with a feedback model on Ray Data (VL-SAFE phase 1).

    python -m cluster.label runs/datasets/town01-expert-dart --model clip           # clip_margin, safety
    python -m cluster.label DIR --model expert                                        # vlm_action
    python -m cluster.label DIR --model clip --concurrency 4 --gpus 0.25 feedback.clip.checkpoint=...

Any `feedback.model` works (clip, vlm, expert, "expert+clip"): the shards are read with
`ray.data.read_parquet`, the model runs in `map_batches` on a pool of actors (each holding one model,
with a GPU fraction when the cluster has GPUs), and each shard's answers are written as a label file
`DIR/labels/<name>/<shard>.parquet` (the fields and their masks, row for row) once all its rows are
back. The dataset source merges label files over the shard's columns. Finished shards are never
labelled again: a run that dies halfway resumes where it stopped. The expert is the dataset's own
expert_action column (the privileged state it needs is not stored); image models read rgb_bev.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from configs.schema import FeedbackConfig, model_fields
from dataset.parquet import LABELS_DIR, DatasetError, list_shards, read_metadata, write_parquet_atomically
from dataset.schema import FULL_SPEC, SCHEMA, column_to_numpy

logger = logging.getLogger(__name__)

SPEED_INDEX = 4  # envs/observation.state_vector: v_x in m/s
ITEM_EXTRAS = ("rgb_bev", "command", "forward")  # dataset columns image models read (dataset/schema.EXTRA_SPEC)
_PATH = "path"


def _field_type(key: str) -> pa.DataType:
    return SCHEMA.field(key).type


class FeedbackLabeller:
    """One feedback model in a Ray Data actor: a pyarrow batch of dataset rows in, the answered
    fields (and masks) out, keyed by path and step. is_last rows hold no transition: mask 0."""

    def __init__(self, feedback: FeedbackConfig, fields: tuple[str, ...], seed: int = 0):
        self.fields = fields
        self.model = None
        if feedback.model != "expert":
            from feedback.registry import build_model

            self.model = build_model(feedback, seed)

    def __call__(self, batch: pa.Table) -> pa.Table:
        col = {
            key: column_to_numpy(batch.column(key), key)
            for key in ("stream_id", "step", "is_last", "action", "state", "expert_action", "expert_action_mask")
        }
        values = {field: np.zeros((batch.num_rows, *FULL_SPEC[field][0]), np.float32) for field in self.fields}
        masks = {field: np.zeros(batch.num_rows, np.float32) for field in self.fields}
        if self.model is None:
            self._expert(col, values, masks)
        else:
            self._model(batch, col, values, masks)
        out = {_PATH: batch.column(_PATH), "step": pa.array(col["step"], pa.int64())}
        for field in self.fields:
            out[field] = _to_arrow(values[field], field)
            out[f"{field}_mask"] = pa.array(masks[field], pa.float32())
        return pa.table(out)

    def _expert(self, col, values, masks) -> None:
        has = (col["expert_action_mask"] > 0) & ~col["is_last"]
        values["vlm_action"][has] = col["expert_action"][has]
        masks["vlm_action"][has] = 1.0

    def _model(self, batch: pa.Table, col, values, masks) -> None:
        from core.feedback import validate

        extra = {key: column_to_numpy(batch.column(key), key) for key in ITEM_EXTRAS if key in batch.column_names}
        rows = np.flatnonzero(~col["is_last"])
        items = feedback_items({**col, **extra}, rows, self.fields)
        answers = {result.key: result.values for result in self.model(items)} if items else {}
        for i, item in zip(rows, items):
            for field in self.fields:
                value, ok = validate(field, answers.get(item.key, {}).get(field))
                if ok:
                    values[field][i], masks[field][i] = value, 1.0


def feedback_items(rows: dict[str, np.ndarray], indices, wanted: tuple[str, ...]) -> list:
    """FeedbackItems for dataset rows, as a worker sent them at those steps: keyed by stream and
    step, with the speed from the state vector and, where the rows have them, the RGB BEV, route
    command and forward vector (ITEM_EXTRAS)."""
    from core.feedback import FeedbackItem

    rgb, command, forward = (rows.get(key) for key in ITEM_EXTRAS)
    return [
        FeedbackItem(
            env_id=int(rows["stream_id"][i]),
            step=int(rows["step"][i]),
            wanted=wanted,
            command=int(command[i]) if command is not None else 0,
            speed=float(rows["state"][i, SPEED_INDEX]),
            action=rows["action"][i],
            image=rgb[i] if rgb is not None else None,
            forward=tuple(float(v) for v in forward[i]) if forward is not None else None,
        )
        for i in indices
    ]


def _to_arrow(values: np.ndarray, field: str) -> pa.Array:
    if values.ndim == 1:
        return pa.array(values, pa.float32())
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), values.shape[1])


def pending_shards(directory: Path, name: str):
    """Shards without a label file of this label set."""
    return [s for s in list_shards(directory) if not (directory / LABELS_DIR / name / s.name).exists()]


def label_dataset(
    directory: str | Path,
    feedback: FeedbackConfig,
    name: str | None = None,
    batch_size: int = 64,
    concurrency: int = 1,
    num_gpus: float = 0.0,
    progress_every_s: float = 10.0,
) -> dict:
    """Label every shard not labelled yet; returns counts (shards, rows, per-field availability)."""
    import ray

    directory = Path(directory)
    read_metadata(directory)  # a clear error for a directory that is not a dataset
    fields = tuple(sorted(model_fields(feedback.model)))
    if not fields:
        raise ValueError(f"feedback.model = {feedback.model!r} answers no field; use clip, vlm, expert or a+b")
    name = name or feedback.model.replace("+", "-")
    todo = pending_shards(directory, name)
    total_shards = len(list_shards(directory))
    logger.info(
        "labelling %d of %d shards of %s with %s (fields %s) -> labels/%s",
        len(todo),
        total_shards,
        directory,
        feedback.model,
        ", ".join(fields),
        name,
    )
    if not todo:
        return {"label_set": name, "shards_labelled": 0, "rows": 0, "fields": fields, "availability": {}}
    (directory / LABELS_DIR / name).mkdir(parents=True, exist_ok=True)
    expected = {str(s.path): pq.ParquetFile(s.path).metadata.num_rows for s in todo}
    columns = ["stream_id", "step", "is_last", "action", "state", "expert_action", "expert_action_mask"]
    if feedback.model != "expert":
        present = set(pq.read_schema(todo[0].path).names)
        columns += [c for c in ITEM_EXTRAS if c in present]
    data = ray.data.read_parquet([str(s.path) for s in todo], columns=columns, include_paths=True)
    labelled = data.map_batches(
        FeedbackLabeller,
        fn_constructor_kwargs={"feedback": feedback, "fields": fields},
        batch_size=batch_size,
        batch_format="pyarrow",
        concurrency=concurrency,
        num_gpus=num_gpus or None,
        num_cpus=1,
    )
    parts: dict[str, list[pa.Table]] = defaultdict(list)
    got: dict[str, int] = defaultdict(int)
    answered = {field: 0.0 for field in fields}
    done_rows, done_shards, last_log, started = 0, 0, time.monotonic(), time.monotonic()
    for batch in labelled.iter_batches(batch_size=None, batch_format="pyarrow"):
        for path in set(batch.column(_PATH).to_pylist()):
            part = batch.filter(pa.compute.equal(batch.column(_PATH), path))
            parts[path].append(part)
            got[path] += part.num_rows
            if got[path] == expected[path]:
                table = pa.concat_tables(parts.pop(path)).sort_by("step")
                for field in fields:
                    answered[field] += float(np.sum(table.column(f"{field}_mask").to_numpy()))
                _write_labels(
                    directory / LABELS_DIR / name / Path(path).name, table.drop_columns([_PATH]), feedback.model
                )
                done_rows += table.num_rows
                done_shards += 1
        if time.monotonic() - last_log > progress_every_s:
            last_log = time.monotonic()
            logger.info(
                "labelled %d/%d shards (%d rows, %.0f rows/s)",
                done_shards,
                len(todo),
                done_rows,
                done_rows / max(last_log - started, 1e-6),
            )
    missing = sorted(set(expected) - {p for p in expected if got[p] == expected[p]})
    if missing:
        raise RuntimeError(
            f"labelling ended with {len(missing)} shard(s) incomplete (first: {missing[0]}); run it "
            "again to finish them"
        )
    logger.info("labelled %d shards, %d rows in %.0f s", done_shards, done_rows, time.monotonic() - started)
    return {
        "label_set": name,
        "shards_labelled": done_shards,
        "rows": done_rows,
        "fields": fields,
        "availability": {field: answered[field] / max(done_rows, 1) for field in fields},
    }


def _write_labels(path: Path, table: pa.Table, model: str) -> None:
    schema = pa.schema([pa.field(c, _field_type(c), nullable=False) for c in table.column_names])
    write_parquet_atomically(table.cast(schema), path, {"model": model, "rows": table.num_rows})


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory")
    parser.add_argument("--model", required=True, help="a feedback.model: clip, vlm, expert, expert+clip, ...")
    parser.add_argument("--name", help="label set name (default: the model)")
    parser.add_argument("--config", action="append", help="YAML for the feedback section (clip/vlm settings)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=1, help="model actors")
    parser.add_argument("--gpus", type=float, default=0.0, help="GPU fraction per model actor")
    parser.add_argument("--ray-address", default=None, help="Ray cluster (default: join one or start one)")
    parser.add_argument("overrides", nargs="*", help="feedback.*=value overrides, e.g. feedback.clip.checkpoint=...")
    args = parser.parse_intermixed_args(argv)
    from configs.loader import ConfigError, load_config

    try:
        wanted = ",".join(sorted(model_fields(args.model)))
        config = load_config(
            args.config or [], [*args.overrides, f"feedback.model={args.model}", f"feedback.wanted=[{wanted}]"]
        )
        feedback = dataclasses.replace(config.feedback, mode="async")
        import ray

        started = not ray.is_initialized()
        if started:
            ray.init(address=args.ray_address, log_to_driver=True)
        try:
            result = label_dataset(args.directory, feedback, args.name, args.batch_size, args.concurrency, args.gpus)
        finally:
            if started:  # a caller that goes on (a test, a notebook) gets its process back without Ray
                ray.shutdown()
    except (ConfigError, DatasetError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
