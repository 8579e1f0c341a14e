"""The BEV stored compactly: each row's 15x96x96 masks as one LZ4 block.

The BEV is almost all zeros (road 30 % of pixels, everything else 0-8 %: envs/bev.py), so a row of
138,240 bytes compresses losslessly to about 1.4 KB (at most 3 KB over 500 Town01 expert steps),
and decompresses about as fast as the raw row is copied out of a large array: what sampling costs
stays the same while 1M rows take about 1.5 GB instead of 138 GB (docs/results.md, "Replay memory").

Rows are encoded once, when a chunk arrives, and the same blocks go into the replay and its journal.
Decoding writes each row straight into the batch with LZ4_decompress_safe, through ctypes from the
LZ4 library python-lz4 carries: lz4.block.decompress would make a bytes object per row and a second
copy into the batch, which made sampling 0.8x as fast as gathering raw rows; this makes it faster.

A raw LZ4 block has no checksum of its own: a flipped bit may still decode, to a different row. So
each block's CRC-32 is computed where the block is made (encode_rows: ~1 us a row, against ~40 us
for the compression), travels with it (`BevBlocks.crc32`; `bev_crc32` in a packed chunk and in a
journal segment) and is checked wherever the blocks are stored (ReplayBuffer.add, the journal's read).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import zlib
from collections.abc import Iterable, Sequence

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
    raise ImportError(
        "LZ4_decompress_safe is neither in python-lz4's extension nor in a system liblz4: "
        "reinstall lz4 from its wheel (pip install --force-reinstall lz4) or install liblz4"
    )


_DECOMPRESS = _lz4_decompress_safe()


class BevBlocks(tuple):
    """LZ4 blocks (bytes, one per BEV row) with the CRC-32 each had where it was made (`crc32`, uint32
    [N]): whoever stores them checks `damaged()` first. A tuple, so that it goes wherever a sequence
    of blocks goes and cannot change under its checksums."""

    def __new__(cls, blocks: Iterable[bytes], crc32: np.ndarray):
        self = super().__new__(cls, blocks)
        crc32 = np.asarray(crc32)
        if crc32.shape != (len(self),) or crc32.dtype.kind not in "iu":
            raise ValueError(
                f"{len(self)} BEV blocks need {len(self)} integer CRC-32 checksums, got an array "
                f"of {crc32.dtype} {crc32.shape}; the chunk is damaged"
            )
        self.crc32 = crc32.astype(np.uint32, copy=False)
        return self

    def __getnewargs__(self):  # pickle and copy: the checksums with the blocks
        return tuple(self), self.crc32

    def damaged(self) -> np.ndarray:
        """Indices of the blocks whose CRC-32 is not the one they were made with (empty: all intact)."""
        return np.flatnonzero(checksums(self) != self.crc32)


def checksums(blocks: Sequence[bytes]) -> np.ndarray:
    """The CRC-32 of each block, uint32 [N]."""
    return np.fromiter(map(zlib.crc32, blocks), np.uint32, len(blocks))


def with_checksums(blocks: Sequence[bytes]) -> BevBlocks:
    """`blocks` as BevBlocks, checksummed now: only for blocks this process made or has checked."""
    return blocks if isinstance(blocks, BevBlocks) else BevBlocks(blocks, checksums(blocks))


def undecodable(blocks: Sequence[bytes]) -> np.ndarray:
    """Indices of the blocks that do not decode to exactly one BEV row: the only check possible for
    blocks stored without a checksum (a flipped bit inside a literal still decodes, and goes unseen)."""
    scratch = np.empty(ROW_BYTES, np.uint8)
    address = scratch.ctypes.data
    return np.array(
        [i for i, block in enumerate(blocks) if _DECOMPRESS(block, address, len(block), ROW_BYTES) != ROW_BYTES],
        np.int64,
    )


def encode_rows(bev: np.ndarray) -> BevBlocks:
    """One LZ4 block per row of a uint8 [N, 15, 96, 96] array, with each block's CRC-32."""
    if bev.dtype != np.uint8 or bev.shape[1:] != BEV_SHAPE:
        raise ValueError(
            f"encode_rows: expected a uint8 array of shape (N, {', '.join(map(str, BEV_SHAPE))}), "
            f"got {bev.dtype} {bev.shape}"
        )
    rows = np.ascontiguousarray(bev).reshape(len(bev), ROW_BYTES)
    return with_checksums([lz4.block.compress(row, store_size=False) for row in rows])


def decode_rows(blocks: Sequence[bytes], shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The uint8 rows of `blocks`, as an array of shape `shape` + BEV_SHAPE (default: (len(blocks),))."""
    out = np.empty((len(blocks), ROW_BYTES), np.uint8)
    address = out.ctypes.data
    for i, block in enumerate(blocks):
        written = _DECOMPRESS(block, address + i * ROW_BYTES, len(block), ROW_BYTES)
        if written != ROW_BYTES:
            raise ValueError(
                f"BEV block {i} of {len(blocks)} ({len(block)} bytes) is not an LZ4 block of one BEV "
                f"row: it decodes to {'an error' if written < 0 else f'{written} bytes'}, not {ROW_BYTES}"
            )
    return out.reshape(*(shape if shape is not None else (len(blocks),)), *BEV_SHAPE)


def pack_blocks(blocks: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Blocks as one byte array and N+1 offsets, for an npz file (no pickled objects)."""
    sizes = np.fromiter((len(b) for b in blocks), np.int64, len(blocks))
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    return np.frombuffer(b"".join(blocks), np.uint8), offsets


def unpack_blocks(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    """The inverse of pack_blocks."""
    if (
        offsets.ndim != 1
        or len(offsets) < 1
        or offsets[0] != 0
        or offsets[-1] != len(data)
        or np.any(np.diff(offsets) < 0)
    ):
        raise ValueError(
            f"BEV block offsets do not describe {len(data)} bytes (first {offsets[:1].tolist()}, "
            f"last {offsets[-1:].tolist()}); the file is damaged"
        )
    raw = data.tobytes()
    return [raw[lo:hi] for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


BLOCK_KEYS = ("bev_lz4", "bev_lz4_offsets")  # a packed chunk's and a journal segment's BEV blocks
CRC_KEY = "bev_crc32"  # and their checksums (absent from journal segments written before them)
PACKED_KEYS = (*BLOCK_KEYS, CRC_KEY)


def packed_bev(blocks: Sequence[bytes]) -> dict[str, np.ndarray]:
    """The blocks and their checksums as the fields a packed chunk and a journal segment carry instead
    of `bev` (blocks without checksums get them here: the caller vouches for them)."""
    blocks = with_checksums(blocks)
    return {**dict(zip(BLOCK_KEYS, pack_blocks(blocks))), CRC_KEY: blocks.crc32}


def blocks_in(fields) -> Sequence[bytes]:
    """The blocks held in `fields` (a packed chunk, or an opened journal segment): BevBlocks carrying
    the checksums stored with them, not checked here (the caller does, and names what holds them), or
    a plain list where `fields` has none (a journal segment written before they were)."""
    blocks = unpack_blocks(*(fields[key] for key in BLOCK_KEYS))
    return BevBlocks(blocks, fields[CRC_KEY]) if CRC_KEY in fields else blocks


def pack_chunk(chunk: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A chunk for the wire: its BEV as LZ4 blocks (`bev_lz4` bytes, `bev_lz4_offsets`) instead of
    raw rows, ~100x fewer bytes for Ray to move, and their CRC-32s (`bev_crc32`); the learner checks
    those and stores the blocks as they are."""
    return {**{key: value for key, value in chunk.items() if key != "bev"}, **packed_bev(encode_rows(chunk["bev"]))}


def unpack_chunk(chunk: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], BevBlocks]:
    """(the chunk without its BEV, the BEV's blocks with their checksums) of a packed chunk."""
    if CRC_KEY not in chunk:
        raise ValueError(
            f"a packed chunk without {CRC_KEY!r} (its BEV blocks' checksums): the worker that packed it "
            "runs code from before the checksums; run the workers and the learner from one version"
        )
    return {key: value for key, value in chunk.items() if key not in PACKED_KEYS}, blocks_in(chunk)


def is_packed(chunk: dict) -> bool:
    return BLOCK_KEYS[0] in chunk
