"""One Arrow schema for transition datasets, derived from the replay's row spec
(learners/replay.ROW_SPEC): every row field is a column, one row per stored replay row (an
observation plus the transition that starts at it; an episode's final observation is a row of its
own with is_last). Fixed-size fields are fixed-size lists; the BEV is the raw uint8 masks as
fixed-size binary, which Parquet's zstd pages shrink to a few hundred bytes per row (consecutive
frames are nearly identical, the masks mostly zero).

`to_table` and `from_table` convert between replay chunks (dict of numpy arrays) and Arrow tables;
`check_schema` names every missing or mistyped column.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from dataset.rows import ROW_SPEC
from envs.spaces import RGB_BEV_SHAPE

# Columns a collection adds beyond the replay's rows, for labelling with image models and for
# CLIP and VLM training: the RGB BEV the env renders for foundation models (~120 bytes a row on
# disk), the route command and the ego's forward vector (both in the VLM's prompt). Optional when
# reading: the replay never holds them, and datasets written before `forward` existed lack it.
EXTRA_SPEC: dict[str, tuple[tuple[int, ...], np.dtype]] = {
    "rgb_bev": (RGB_BEV_SHAPE, np.dtype(np.uint8)),
    "command": ((), np.dtype(np.int64)),
    "forward": ((2,), np.dtype(np.float32)),  # unit vector, CARLA world frame (envs/driving_env.py)
}
FULL_SPEC = {**ROW_SPEC, **EXTRA_SPEC}


def _arrow_type(key: str, shape: tuple[int, ...], dtype: np.dtype) -> pa.DataType:
    if len(shape) > 1:  # images: raw bytes
        return pa.binary(int(np.prod(shape)) * dtype.itemsize)
    scalar = pa.from_numpy_dtype(dtype)
    if not shape:
        return scalar
    return pa.list_(scalar, shape[0])


def _field(key: str) -> pa.Field:
    shape, dtype = FULL_SPEC[key]
    return pa.field(key, _arrow_type(key, shape, dtype), nullable=False)


SCHEMA = pa.schema([_field(key) for key in ROW_SPEC])  # what every dataset has
EXTRA_FIELDS = {key: _field(key) for key in EXTRA_SPEC}


class SchemaMismatch(ValueError):
    """A table's columns do not match the dataset schema; the message lists each problem."""


def check_schema(schema: pa.Schema, source: str) -> None:
    """Raise SchemaMismatch naming the missing and mistyped columns of `source` (extra columns,
    such as labels, are allowed)."""
    problems = []
    for field in [*SCHEMA, *EXTRA_FIELDS.values()]:
        if field.name not in schema.names:
            if field.name not in EXTRA_FIELDS:
                problems.append(f"missing column {field.name!r} ({field.type})")
        elif not schema.field(field.name).type.equals(field.type):
            problems.append(f"column {field.name!r} is {schema.field(field.name).type}, expected {field.type}")
    if problems:
        raise SchemaMismatch(
            f"{source} does not match the transition schema: {'; '.join(problems)}. "
            "Datasets are written by collect.py (dataset/parquet.py); a file from another "
            "tool needs these columns"
        )


def to_table(chunk: Mapping[str, np.ndarray]) -> pa.Table:
    """A replay chunk (learners.replay.validate_chunk's layout, plus any EXTRA_SPEC fields) as an
    Arrow table."""
    n = len(chunk["step"])
    fields = [*SCHEMA, *(field for key, field in EXTRA_FIELDS.items() if key in chunk)]
    columns = []
    for field in fields:
        values = np.ascontiguousarray(chunk[field.name])
        if pa.types.is_fixed_size_binary(field.type):
            flat = pa.array(values.reshape(-1), pa.uint8())
            columns.append(pa.FixedSizeBinaryArray.from_buffers(field.type, n, [None, flat.buffers()[1]]))
        elif pa.types.is_fixed_size_list(field.type):
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), field.type.list_size))
        else:
            columns.append(pa.array(values, field.type))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def column_to_numpy(column: pa.ChunkedArray | pa.Array, key: str) -> np.ndarray:
    """One schema column back to its FULL_SPEC array."""
    shape, dtype = FULL_SPEC[key]
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if len(shape) > 1:
        data = np.frombuffer(
            array.buffers()[1], np.uint8, count=n * int(np.prod(shape)), offset=array.offset * int(np.prod(shape))
        )
        return data.reshape(n, *shape).copy()
    if shape:
        return array.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(n, *shape)
    return array.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def from_table(table: pa.Table, source: str = "table", extra: bool = False) -> dict[str, np.ndarray]:
    """An Arrow table with the schema's columns as a replay chunk (with `extra`, also the EXTRA_SPEC
    columns it has)."""
    check_schema(table.schema, source)
    keys = [*ROW_SPEC, *(key for key in EXTRA_SPEC if extra and key in table.column_names)]
    return {key: column_to_numpy(table.column(key), key) for key in keys}
