"""Sharded Parquet transition datasets: a sink that rollout workers write through and a source
the learner reads from (the DatasetSink / DatasetSource roles of core.py).

    DIR/dataset.json                       what was collected: town, traffic, suite, acting policy, seeds, version
    DIR/shards/stream-SSSSS-NNNNNN.parquet whole episodes of one stream, in step order (schema.py)
    DIR/labels/NAME/<shard file>           columns a labeller added (cluster/label.py), row for row

A shard is written whole (a temporary file renamed into place) and ends with an episode's final row,
except the last one a sink writes when it closes and the cut of an episode longer than two shards
(a sink holds at most that much): a collector that dies loses only the rows it had not written yet,
and a resumed collection starts new streams after the highest one on disk. Readable as it is with
pandas (`pd.read_parquet(DIR + "/shards")`) and `ray.data.read_parquet(DIR + "/shards")`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataset.rows import ROW_SPEC
from dataset.schema import FULL_SPEC, column_to_numpy, from_table, to_table

logger = logging.getLogger(__name__)

METADATA_FILE = "dataset.json"
SHARDS_DIR, LABELS_DIR = "shards", "labels"
FORMAT_VERSION = 1
_SHARD_NAME = re.compile(r"^stream-(\d{5,})-(\d{6,})\.parquet$")
_COMPRESSION = {"compression": "zstd", "compression_level": 3}
_MAX_BUFFERED_SHARDS = 2  # a sink holds at most about this many shards' rows before it writes


class DatasetError(ValueError):
    """A dataset directory or one of its files cannot be used; the message names the path and the fix."""


@dataclass(frozen=True)
class Shard:
    path: Path
    stream_id: int
    sequence: int

    @property
    def name(self) -> str:
        return self.path.name


def shard_name(stream_id: int, sequence: int) -> str:
    return f"stream-{stream_id:05d}-{sequence:06d}.parquet"


def write_parquet_atomically(table: pa.Table, path: Path, metadata: Mapping[str, Any] | None = None) -> None:
    """Write `table` to `path` through a temporary file, so that `path` is either whole or absent."""
    if metadata:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), b"mentor": json.dumps(metadata).encode()}
        )
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, **_COMPRESSION)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- metadata


def create_dataset(directory: str | Path, metadata: Mapping[str, Any]) -> Path:
    """Make `directory` a dataset (or check that the one there was collected the same way: a
    resumed collection must not mix towns, traffic or policies)."""
    directory = Path(directory)
    path = directory / METADATA_FILE
    wanted = {"format_version": FORMAT_VERSION, **metadata}
    if path.exists():
        found = read_metadata(directory)
        keys = [k for k in ("town", "traffic", "route_suite", "policy") if k in wanted]
        differ = [f"{k}: {found.get(k)!r} on disk, {wanted[k]!r} now" for k in keys if found.get(k) != wanted[k]]
        if differ:
            raise DatasetError(
                f"{path} was collected differently ({'; '.join(differ)}); collect into a new "
                "directory, or resume with the same settings"
            )
        return directory
    (directory / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps(wanted, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return directory


def read_metadata(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise DatasetError(
            f"{directory} is not a transition dataset: {METADATA_FILE} is missing. Collect one with "
            "`python collect.py --config configs/collect/expert.yaml`, or point data.dataset at "
            "the directory collect.py wrote"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path} cannot be read ({err}); restore it from the collection's log or recollect") from err
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path} has format_version {meta.get('format_version')!r}; this Mentor reads {FORMAT_VERSION}"
        )
    return meta


def list_shards(directory: str | Path) -> list[Shard]:
    shards = []
    for path in sorted((Path(directory) / SHARDS_DIR).glob("*.parquet")):
        match = _SHARD_NAME.match(path.name)
        if match is None:
            logger.warning("%s: not a shard name (stream-SSSSS-NNNNNN.parquet); ignored", path)
            continue
        shards.append(Shard(path, int(match.group(1)), int(match.group(2))))
    return sorted(shards, key=lambda s: (s.stream_id, s.sequence))


# --------------------------------------------------------------------------------------------- sink


class ParquetSink:
    """Writes one stream's rows as shards of whole episodes (DatasetSink). `write` takes replay
    chunks; a shard goes to disk once it holds at least `rows_per_shard` rows and ends an episode."""

    def __init__(self, directory: str | Path, stream_id: int, rows_per_shard: int = 2048):
        self.directory = Path(directory)
        self.stream_id = stream_id
        self.rows_per_shard = rows_per_shard
        existing = [s.sequence for s in list_shards(self.directory) if s.stream_id == stream_id]
        self._sequence = max(existing, default=-1) + 1
        self._buffer: list[dict[str, np.ndarray]] = []
        self._buffered = 0
        self.rows_written = 0
        self.transitions_written = 0

    def write(self, chunk: Mapping[str, np.ndarray]) -> None:
        if np.any(chunk["stream_id"] != self.stream_id):
            raise ValueError(
                f"ParquetSink for stream {self.stream_id} got rows of streams "
                f"{sorted(set(chunk['stream_id'].tolist()))}: give each worker its own sink"
            )
        self._buffer.append({key: np.asarray(value) for key, value in chunk.items() if key in FULL_SPEC})
        self._buffered += len(chunk["step"])
        if self._buffered >= self.rows_per_shard:
            # A very long episode is cut rather than held in memory (a row is ~250 KB before compression).
            self._flush(whole_episodes_only=self._buffered < _MAX_BUFFERED_SHARDS * self.rows_per_shard)

    def close(self) -> None:
        """Write everything still buffered (a last shard may end inside an episode)."""
        self._flush(whole_episodes_only=False)

    def _flush(self, whole_episodes_only: bool) -> None:
        if not self._buffered:
            return
        rows = {key: np.concatenate([c[key] for c in self._buffer]) for key in self._buffer[0]}
        ends = np.flatnonzero(rows["is_last"])
        cut = (int(ends[-1]) + 1 if len(ends) else 0) if whole_episodes_only else len(rows["step"])
        if cut == 0:
            return
        head = {key: value[:cut] for key, value in rows.items()}
        path = self.directory / SHARDS_DIR / shard_name(self.stream_id, self._sequence)
        transitions = int(np.count_nonzero(~head["is_last"]))
        write_parquet_atomically(
            to_table(head),
            path,
            {"rows": cut, "transitions": transitions, "episodes": int(np.count_nonzero(head["is_last"]))},
        )
        self._sequence += 1
        self.rows_written += cut
        self.transitions_written += transitions
        tail = {key: value[cut:] for key, value in rows.items()}
        self._buffer, self._buffered = ([tail], len(tail["step"])) if len(tail["step"]) else ([], 0)


# ------------------------------------------------------------------------------------------- source


class ParquetDataset:
    """A dataset directory as a DatasetSource: `chunks()` yields each shard's rows (with any label
    columns merged in) in stream and step order. A shard that cannot be read raises DatasetError
    naming it, unless `skip_corrupt` (then it is logged and skipped)."""

    def __init__(self, directory: str | Path, skip_corrupt: bool = False):
        self.directory = Path(directory)
        self.metadata = read_metadata(self.directory)
        self.shards = list_shards(self.directory)
        self.skip_corrupt = skip_corrupt
        self.skipped: list[Path] = []
        if not self.shards:
            raise DatasetError(f"{self.directory / SHARDS_DIR} holds no shards; the collection wrote nothing yet")

    def label_sets(self) -> list[str]:
        return sorted(p.name for p in (self.directory / LABELS_DIR).glob("*") if p.is_dir())

    def chunks(self) -> Iterator[dict[str, np.ndarray]]:
        for shard in self.shards:
            try:
                chunk = self.read_shard(shard)
            except DatasetError:
                if not self.skip_corrupt:
                    raise
                logger.warning("skipping unreadable shard %s (data.skip_corrupt is set)", shard.path, exc_info=True)
                self.skipped.append(shard.path)
                continue
            yield chunk

    def read_shard(self, shard: Shard, extra: bool = False) -> dict[str, np.ndarray]:
        """The shard's replay rows with labels merged (`extra`: also its rgb_bev and command)."""
        table = _read_table(shard.path, None if extra else list(ROW_SPEC))
        chunk = from_table(table, str(shard.path), extra)
        for name in self.label_sets():
            label_path = self.directory / LABELS_DIR / name / shard.name
            if label_path.exists():
                _merge_labels(chunk, _read_table(label_path), label_path)
        return chunk

    def rows(self) -> int:
        total = 0
        for shard in self.shards:
            try:
                total += _file_rows(shard.path)
            except DatasetError:
                if not self.skip_corrupt:
                    raise
        return total


def _read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        if columns is not None:
            present = set(pq.read_schema(path).names)
            columns = [c for c in columns if c in present]  # a missing one is named by check_schema
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as err:
        raise _unreadable(path, err) from err


def _file_rows(path: Path) -> int:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as err:
        raise _unreadable(path, err) from err


def _unreadable(path: Path, err: Exception) -> DatasetError:
    return DatasetError(
        f"shard {path} cannot be read ({type(err).__name__}: {err}); it is truncated or corrupt: "
        "delete it (its episodes are lost) or set data.skip_corrupt=true to skip it"
    )


def _merge_labels(chunk: dict[str, np.ndarray], labels: pa.Table, path: Path) -> None:
    n = len(chunk["step"])
    if labels.num_rows != n:
        raise DatasetError(
            f"label file {path} has {labels.num_rows} rows, its shard {n}; relabel it "
            "(delete the file and run cluster.label again)"
        )
    if "step" in labels.column_names and not np.array_equal(
        column_to_numpy(labels.column("step"), "step"), chunk["step"]
    ):
        raise DatasetError(f"label file {path} does not follow its shard's steps; delete it and label again")
    for key in labels.column_names:
        if key in ROW_SPEC and key != "step":
            chunk[key] = column_to_numpy(labels.column(key), key)
