"""The BEV stored compactly: each row's 15x96x96 masks as one LZ4 block.

The BEV is almost all zeros (road 30 % of pixels, everything else 0-8 %: envs/bev.py), so a row of
138,240 bytes compresses losslessly to about 1.4 KB (at most 3 KB over 500 Town01 expert steps),
and decompresses about as fast as the raw row is copied out of a large array: what sampling costs
stays the same while 1M rows take about 1.5 GB instead of 138 GB (docs/results.md, "Replay memory").

Rows are encoded once, when a chunk arrives, and the same blocks go into the replay and its journal.
Decoding writes each row straight into the batch with LZ4_decompress_safe, through ctypes from the
LZ4 library python-lz4 carries: lz4.block.decompress would make a bytes object per row and a second
copy into the batch, which made sampling 0.8x as fast as gathering raw rows; this makes it faster.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Sequence

import lz4.block
import numpy as np

from envs.spaces import BEV_SHAPE

ROW_BYTES = int(np.prod(BEV_SHAPE))


def _lz4_decompress_safe():
    """LZ4_decompress_safe(src, dst, compressed_size, dst_capacity) -> bytes written or < 0."""
    for library in (lz4.block._block.__file__, ctypes.util.find_library("lz4")):  # bundled, then the system's
        try:
            function = ctypes.CDLL(library).LZ4_decompress_safe
        except (OSError, AttributeError, TypeError):
            continue
        function.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        function.restype = ctypes.c_int
        return function
    raise ImportError("LZ4_decompress_safe is neither in python-lz4's extension nor in a system liblz4: "
                      "reinstall lz4 from its wheel (pip install --force-reinstall lz4) or install liblz4")


_DECOMPRESS = _lz4_decompress_safe()


def encode_rows(bev: np.ndarray) -> list[bytes]:
    """One LZ4 block per row of a uint8 [N, 15, 96, 96] array."""
    if bev.dtype != np.uint8 or bev.shape[1:] != BEV_SHAPE:
        raise ValueError(f"encode_rows: expected a uint8 array of shape (N, {', '.join(map(str, BEV_SHAPE))}), "
                         f"got {bev.dtype} {bev.shape}")
    rows = np.ascontiguousarray(bev).reshape(len(bev), ROW_BYTES)
    return [lz4.block.compress(row, store_size=False) for row in rows]


def decode_rows(blocks: Sequence[bytes], shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The uint8 rows of `blocks`, as an array of shape `shape` + BEV_SHAPE (default: (len(blocks),))."""
    out = np.empty((len(blocks), ROW_BYTES), np.uint8)
    address = out.ctypes.data
    for i, block in enumerate(blocks):
        written = _DECOMPRESS(block, address + i * ROW_BYTES, len(block), ROW_BYTES)
        if written != ROW_BYTES:
            raise ValueError(f"BEV block {i} of {len(blocks)} ({len(block)} bytes) is not an LZ4 block of one BEV "
                             f"row: it decodes to {'an error' if written < 0 else f'{written} bytes'}, not {ROW_BYTES}")
    return out.reshape(*(shape if shape is not None else (len(blocks),)), *BEV_SHAPE)


def pack_blocks(blocks: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Blocks as one byte array and N+1 offsets, for an npz file (no pickled objects)."""
    sizes = np.fromiter((len(b) for b in blocks), np.int64, len(blocks))
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    return np.frombuffer(b"".join(blocks), np.uint8), offsets


def unpack_blocks(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    """The inverse of pack_blocks."""
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(data) \
            or np.any(np.diff(offsets) < 0):
        raise ValueError(f"BEV block offsets do not describe {len(data)} bytes (first {offsets[:1].tolist()}, "
                         f"last {offsets[-1:].tolist()}); the file is damaged")
    raw = data.tobytes()
    return [raw[lo:hi] for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


PACKED_KEYS = ("bev_lz4", "bev_lz4_offsets")  # a packed chunk's and a journal segment's BEV fields


def packed_bev(blocks: Sequence[bytes]) -> dict[str, np.ndarray]:
    """The blocks as the fields a packed chunk and a journal segment carry instead of `bev`."""
    return dict(zip(PACKED_KEYS, pack_blocks(blocks)))


def blocks_in(fields) -> list[bytes]:
    """The blocks held in `fields` (a packed chunk, or an opened journal segment)."""
    return unpack_blocks(*(fields[key] for key in PACKED_KEYS))


def pack_chunk(chunk: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A chunk for the wire: its BEV as LZ4 blocks (`bev_lz4` bytes, `bev_lz4_offsets`) instead of
    raw rows, ~100x fewer bytes for Ray to move; the learner stores the blocks as they are."""
    return {**{key: value for key, value in chunk.items() if key != "bev"}, **packed_bev(encode_rows(chunk["bev"]))}


def unpack_chunk(chunk: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[bytes]]:
    """(the chunk without its BEV, the BEV's blocks) of a packed chunk."""
    return {key: value for key, value in chunk.items() if key not in PACKED_KEYS}, blocks_in(chunk)


def is_packed(chunk: dict) -> bool:
    return PACKED_KEYS[0] in chunk
