"""Replay buffer of step rows shipped by rollout workers.

Each env step is stored exactly once: a row holds one observation plus the transition that starts at it,
and (obs, next_obs) pairs are recovered at sample time by following `next_row` links to the next row of
the same stream. Storing next observations separately would double the dominant cost, the BEV.

Chunk layout: `dict[str, np.ndarray]` with the keys of `ROW_SPEC` and a common leading dimension N.
Rows of one stream are in step order within a chunk and chunks of one stream arrive in order; chunks of
different streams interleave arbitrarily. An episode of T transitions is T+1 rows: the first with
is_first=True, the last with is_last=True. terminated/truncated are set on the row of the transition
that ended the episode (row T-1) and repeated on the is_last row, which holds no transition: there they
say how the episode ended (is_terminal of a sequence). A stream's step counter never resets, so the
is_last row of one episode is linked to the is_first row of the next.

The BEV, 97 % of a row's bytes raw, is stored as one LZ4 block per row (learners/bev_codec.py): about
1.4 KB instead of 138 KB, decoded only for the rows a batch gathers. Blocks that come with their
CRC-32 (bev_codec.BevBlocks: what a worker packed, what the journal read) are checked before they are
stored: a damaged one would decode to another row, or fail, only when a batch drew it.

Two ways to sample, both from the same links: n-step transitions (`sample`, for actor-critic agents)
and fixed-length sequences that may cross episode boundaries (`sample_sequences`, for world models).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from dataset.rows import ARRAY_KEYS, BEV_KEY, FEEDBACK_KEYS, MASK_KEYS, ROW_SPEC
from learners.bev_codec import BevBlocks, decode_rows, encode_rows

log = logging.getLogger(__name__)

LINK_KEY = "next_row"  # per-slot link to the next row of the same stream, -1 when unknown

_MAX_DRAW_ROUNDS = 50
_CAN_SAMPLE_BLOCK = 4096


# ----------------------------------------------------------------------------------------------- chunks


def empty_chunk(n: int, extra: Mapping[str, tuple[tuple[int, ...], np.dtype]] | None = None) -> dict[str, np.ndarray]:
    """A zero-filled chunk of n rows with the exact shapes/dtypes of ROW_SPEC (fill it, then add it);
    `extra` adds fields beyond the replay's (a dataset's rgb_bev and command, dataset/schema.py)."""
    if n < 0:
        raise ValueError(f"empty_chunk: n must be >= 0, got {n}")
    spec = {**ROW_SPEC, **(extra or {})}
    return {key: np.zeros((n, *shape), dtype) for key, (shape, dtype) in spec.items()}


def validate_chunk(chunk: Mapping[str, np.ndarray], bev_blocks: Sequence[bytes] | None = None) -> int:
    """Check a chunk against ROW_SPEC and return its number of rows N. With `bev_blocks` (its BEV
    already encoded, learners/bev_codec.py) the chunk may leave out the raw `bev`; BevBlocks must
    match their CRC-32s (a plain sequence of blocks is taken as this process made it).

    Raises ValueError naming the key for wrong keys/shapes/dtypes/NaN, TypeError if it is not a dict of arrays.
    """
    if not isinstance(chunk, Mapping):
        raise TypeError(
            f"a chunk must be a dict of numpy arrays, got {type(chunk).__name__}; build one with empty_chunk(n)"
        )
    spec = ROW_SPEC if bev_blocks is None or BEV_KEY in chunk else {k: ROW_SPEC[k] for k in ARRAY_KEYS}
    _check_keys(chunk, spec)
    n = _check_arrays(chunk, spec)
    if bev_blocks is not None and len(bev_blocks) != n:
        raise ValueError(
            f"{len(bev_blocks)} BEV blocks for a chunk of {n} rows; encode the chunk's BEV "
            "with learners.bev_codec (one block per row)"
        )
    if isinstance(bev_blocks, BevBlocks):
        _check_checksums(bev_blocks)
    _check_masks(chunk)
    _check_stream_order(chunk["stream_id"], chunk["step"])
    return n


def _check_keys(chunk: Mapping[str, np.ndarray], spec: Mapping) -> None:
    missing = sorted(set(spec) - set(chunk))
    extra = sorted(set(chunk) - set(spec))
    if missing or extra:
        raise ValueError(
            f"chunk keys do not match ROW_SPEC: missing {missing}, extra {extra}; "
            "build chunks with empty_chunk(n) and fill every field"
        )


def _expected_shape_text(shape: tuple[int, ...]) -> str:
    return "(N, " + ", ".join(str(d) for d in shape) + ")" if shape else "(N,)"


def _check_arrays(chunk: Mapping[str, np.ndarray], spec: Mapping) -> int:
    n: int | None = None
    first_key = ""
    for key, (shape, dtype) in spec.items():
        arr = chunk[key]
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"chunk[{key!r}] must be a numpy array, got {type(arr).__name__}")
        if arr.dtype != dtype:
            raise ValueError(
                f"chunk[{key!r}] has dtype {arr.dtype}, expected {dtype}; convert it with .astype(np.{dtype.name})"
            )
        if arr.ndim != 1 + len(shape) or arr.shape[1:] != shape:
            raise ValueError(f"chunk[{key!r}] has shape {arr.shape}, expected {_expected_shape_text(shape)}")
        if n is None:
            n, first_key = arr.shape[0], key
        elif arr.shape[0] != n:
            raise ValueError(
                f"chunk[{key!r}] has {arr.shape[0]} rows but chunk[{first_key!r}] has {n}; "
                "all fields need the same leading dimension"
            )
        if dtype.kind == "f":
            _check_finite(key, arr)
    assert n is not None  # ROW_SPEC is non-empty
    return n


def _check_finite(key: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(
            f"chunk[{key!r}] contains {int(bad.sum())} NaN/inf value(s), first in row {row}; "
            "fix the producer, or zero the value and clear its mask"
        )


def _check_masks(chunk: Mapping[str, np.ndarray]) -> None:
    for key in MASK_KEYS:
        arr = chunk[key]
        if not np.isin(arr, (0.0, 1.0)).all():
            raise ValueError(
                f"chunk[{key!r}] must hold only 0.0 or 1.0 (availability mask), "
                f"got values {np.unique(arr)[:5].tolist()}"
            )


def _check_stream_order(stream: np.ndarray, step: np.ndarray) -> None:
    # Linking assumes each stream's rows are in increasing step order inside a chunk.
    order = np.argsort(stream, kind="stable")
    s, st = stream[order], step[order]
    bad = np.flatnonzero((s[1:] == s[:-1]) & (st[1:] <= st[:-1]))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"chunk['step']: stream {int(s[i])} has step {int(st[i])} followed by step "
            f"{int(st[i + 1])}; rows of one stream must be in increasing step order"
        )


def _chunk_links(stream: np.ndarray, step: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Within-chunk links: (next local row or -1, first row of each stream, last row of each stream)."""
    order = np.argsort(stream, kind="stable")  # stable: keeps each stream's rows in step order
    s, st = stream[order], step[order]
    same = s[1:] == s[:-1]
    consecutive = same & (st[1:] == st[:-1] + 1)
    next_local = np.full(len(stream), -1, np.int64)
    next_local[order[:-1][consecutive]] = order[1:][consecutive]
    firsts = order[np.concatenate(([True], ~same))]
    lasts = order[np.concatenate((~same, [True]))]
    return next_local, firsts, lasts


def _check_checksums(blocks: BevBlocks) -> None:
    """ValueError naming the first row whose BEV block is not the one it was made as."""
    damaged = blocks.damaged()
    if damaged.size:
        row = int(damaged[0])
        raise ValueError(
            f"chunk['bev'] row {row}: its LZ4 block ({len(blocks[row])} bytes) has CRC-32 "
            f"{zlib.crc32(blocks[row]):08x}, not the {int(blocks.crc32[row]):08x} it was made with "
            f"({damaged.size} of {len(blocks)} blocks changed since they were encoded): the chunk is "
            "refused, nothing of it stored; look for faulty memory or a damaged transfer on its way here"
        )


# --------------------------------------------------------------------------------------------- sampling


@dataclass
class _Paths:
    """Result of walking n-step paths from candidate start slots."""

    valid: np.ndarray  # bool [m]
    reward: np.ndarray  # float64 [m], discounted sum
    discount: np.ndarray  # float64 [m], gamma^k or 0 after `terminated`
    end: np.ndarray  # int64 [m], slot of the observation at the end of the path
    slots: np.ndarray  # int64 [m, n], slot of the k-th step's row, -1 past the path's end
    weights: np.ndarray  # float64 [m, n], gamma^k for steps on the path, else 0

    _FIELDS = ("valid", "reward", "discount", "end", "slots", "weights")

    def take(self, mask: np.ndarray) -> _Paths:
        return _Paths(*(getattr(self, f)[mask] for f in self._FIELDS))

    @classmethod
    def concat(cls, parts: list[_Paths]) -> _Paths:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls._FIELDS))


@dataclass
class _Chains:
    """Result of following links from candidate start slots for a fixed number of rows."""

    valid: np.ndarray  # bool [m]
    slots: np.ndarray  # int64 [m, length]

    def take(self, mask: np.ndarray) -> _Chains:
        return _Chains(self.valid[mask], self.slots[mask])

    @classmethod
    def concat(cls, parts: list[_Chains]) -> _Chains:
        return cls(np.concatenate([p.valid for p in parts]), np.concatenate([p.slots for p in parts]))


def _check_sample_args(batch_size: int, n_step: int, gamma: float) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_step < 1:
        raise ValueError(f"n_step must be >= 1, got {n_step}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")


# ------------------------------------------------------------------------------------------ the buffer


class ReplayBuffer:
    """Ring buffer of step rows: preallocated numpy arrays (one per ROW_SPEC key but the BEV, plus
    `next_row`) and one LZ4 block per slot for the BEV."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 rows, got {capacity}")
        self._capacity = int(capacity)
        self._seed = int(seed)
        # np.zeros maps lazily-zeroed pages, so a large buffer only costs memory as it fills.
        self._arrays: dict[str, np.ndarray] = {
            key: np.zeros((self._capacity, *ROW_SPEC[key][0]), ROW_SPEC[key][1]) for key in ARRAY_KEYS
        }
        self._arrays[LINK_KEY] = np.full(self._capacity, -1, np.int64)
        self._bev_blocks = np.full(self._capacity, b"", object)
        self._bev_bytes = 0  # the stored blocks' total size
        self._size = 0
        self._cursor = 0
        self._inserted_total = 0
        self._transitions_total = 0
        self._tails: dict[int, tuple[int, int]] = {}  # stream_id -> (slot, step) of its last inserted row
        self._rng = np.random.default_rng(self._seed)

    # ---- introspection

    def __len__(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def inserted_total(self) -> int:
        return self._inserted_total

    @property
    def transitions_total(self) -> int:
        return self._transitions_total

    @property
    def bev_bytes(self) -> int:
        """Bytes the stored BEV blocks take (the arrays of the other fields: `arrays`' nbytes)."""
        return self._bev_bytes

    def bev(self, slots: np.ndarray) -> np.ndarray:
        """The BEV rows at `slots` (any shape), decoded: uint8 [*slots.shape, 15, 96, 96]."""
        slots = np.asarray(slots)
        return decode_rows(self._bev_blocks[slots.ravel()], slots.shape)

    @property
    def arrays(self) -> Mapping[str, np.ndarray]:
        """Read-only views of the full storage arrays of every field but the BEV (all `capacity` rows;
        only [:len(self)] is filled); the BEV rows come decoded from `bev(slots)`."""
        views = {}
        for key, arr in self._arrays.items():
            view = arr.view()
            view.flags.writeable = False
            views[key] = view
        return MappingProxyType(views)

    # ---- insertion

    def add(self, chunk: Mapping[str, np.ndarray], bev_blocks: Sequence[bytes] | None = None) -> int:
        """Insert a chunk of rows; returns the number inserted. Invalid input raises and inserts nothing.
        `bev_blocks`: the chunk's BEV already encoded (bev_codec.encode_rows), when the caller has it
        (the chunk may then leave out the raw `bev`; BevBlocks are checked against their CRC-32s)."""
        n = validate_chunk(chunk, bev_blocks)
        if n > self._capacity:
            raise ValueError(
                f"chunk of {n} rows exceeds the buffer capacity {self._capacity}; "
                "split it into smaller chunks or raise the capacity"
            )
        if n == 0:
            return 0
        stream, step = chunk["stream_id"], chunk["step"]
        next_local, firsts, lasts = _chunk_links(stream, step)
        slots = (self._cursor + np.arange(n)) % self._capacity
        if bev_blocks is None:
            bev_blocks = encode_rows(chunk[BEV_KEY])
        self._write_rows(chunk, n)
        self._write_bev(bev_blocks, slots)
        # Overwritten slots lose their old link here: they get the new in-chunk link or -1.
        self._arrays[LINK_KEY][slots] = np.where(next_local >= 0, slots[next_local], -1)
        self._link_tails(stream, step, slots, firsts, lasts)
        self._cursor = (self._cursor + n) % self._capacity
        self._size = min(self._size + n, self._capacity)
        self._inserted_total += n
        self._transitions_total += int(np.count_nonzero(~chunk["is_last"]))
        return n

    def _write_rows(self, chunk: Mapping[str, np.ndarray], n: int) -> None:
        # Two contiguous slices instead of fancy indexing.
        head = min(n, self._capacity - self._cursor)
        for key in ARRAY_KEYS:
            self._arrays[key][self._cursor : self._cursor + head] = chunk[key][:head]
            if n > head:
                self._arrays[key][: n - head] = chunk[key][head:]

    def _write_bev(self, blocks: Sequence[bytes], slots: np.ndarray) -> None:
        store = self._bev_blocks
        # One by one: numpy would turn a list of bytes into "S" strings, which drop trailing zero bytes.
        for slot, block in zip(slots.tolist(), blocks):
            self._bev_bytes += len(block) - len(store[slot])
            store[slot] = block

    def _holds(self, slot: int, stream_id: int, step: int) -> bool:
        return bool(self._arrays["stream_id"][slot] == stream_id and self._arrays["step"][slot] == step)

    def _link_tails(
        self, stream: np.ndarray, step: np.ndarray, slots: np.ndarray, firsts: np.ndarray, lasts: np.ndarray
    ) -> None:
        """Link each stream's previous last row to this chunk's first row, then record the new tails."""
        for i in firsts:
            sid, first_step = int(stream[i]), int(step[i])
            tail = self._tails.get(sid)
            # The tail slot may have been overwritten by the ring (possibly by this very chunk): never
            # write a link into a row that is no longer the stream's tail.
            if tail is None or not self._holds(tail[0], sid, tail[1]):
                continue
            if first_step == tail[1] + 1:
                self._arrays[LINK_KEY][tail[0]] = slots[i]
            elif first_step <= tail[1]:
                log.warning(
                    "stream %d restarted at step %d after step %d; not linking (was the worker "
                    "restarted with the same stream id?)",
                    sid,
                    first_step,
                    tail[1],
                )
        for i in lasts:
            self._tails[int(stream[i])] = (int(slots[i]), int(step[i]))
        # Forget tails whose rows were overwritten so the dict stays bounded by what is stored.
        self._tails = {sid: t for sid, t in self._tails.items() if self._holds(t[0], sid, t[1])}

    # ---- sampling

    def sample(self, batch_size: int, n_step: int = 1, gamma: float = 0.99) -> dict[str, np.ndarray]:
        """Uniformly sample batch_size valid n-step transitions (with replacement); gathers only those rows."""
        _check_sample_args(batch_size, n_step, gamma)
        starts, paths = self._draw_valid_starts(
            batch_size, lambda c: self._walk(c, n_step, gamma), "transitions", f" (n_step={n_step})"
        )
        return self._gather(starts, paths)

    def sample_sequences(self, batch_size: int, length: int) -> dict[str, np.ndarray]:
        """Uniformly sample batch_size runs of `length` consecutive rows of one stream (with replacement).

        Every ROW_SPEC key comes back as [B, length, ...], plus `index` [B, length] (the slots) and
        `is_terminal` [B, length] (an is_last row of an episode that terminated). Runs may cross episode
        boundaries; `is_first` marks where a new episode starts, as in DreamerV3's replay.
        """
        if batch_size < 1 or length < 1:
            raise ValueError(f"batch_size and length must be >= 1, got {batch_size} and {length}")
        _, chains = self._draw_valid_starts(batch_size, lambda c: self._chain(c, length), f"sequences of {length} rows")
        slots = chains.slots
        batch = {key: self.bev(slots) if key == BEV_KEY else self._arrays[key][slots] for key in ROW_SPEC}
        batch["is_terminal"] = batch["is_last"] & batch["terminated"]
        batch["index"] = slots
        return batch

    def can_sample(self, batch_size: int) -> bool:
        """True when at least batch_size transition rows are stored and at least one 1-step start is valid."""
        if self._size == 0 or batch_size < 1:
            return False
        if np.count_nonzero(~self._arrays["is_last"][: self._size]) < batch_size:
            return False
        return self._any_valid_start(lambda block: self._walk(block, 1, 1.0).valid)

    def can_sample_sequences(self, batch_size: int, length: int) -> bool:
        """True when at least batch_size * length rows are stored and one run of `length` rows exists."""
        if self._size < max(batch_size, 1) * length:
            return False
        return self._any_valid_start(lambda block: self._chain(block, length).valid)

    def _any_valid_start(self, valid_in) -> bool:
        # Scan in blocks and stop at the first valid start; consumes no randomness.
        for lo in range(0, self._size, _CAN_SAMPLE_BLOCK):
            if valid_in(np.arange(lo, min(lo + _CAN_SAMPLE_BLOCK, self._size))).any():
                return True
        return False

    def _draw_valid_starts(self, batch_size: int, walk, what: str, detail: str = "") -> tuple[np.ndarray, Any]:
        """Rejection sampling: draw candidate slots, keep those `walk` finds valid, redraw until enough."""
        starts: list[np.ndarray] = []
        found_parts: list = []
        found = drawn = 0
        max_draw = max(16 * batch_size, 4096)
        for _ in range(_MAX_DRAW_ROUNDS if self._size else 0):
            need = batch_size - found
            if need <= 0:
                break
            # Scale the draw by the valid fraction seen so far so sparse buffers converge in a few rounds.
            rate = max(found, 0.5) / drawn if drawn else 1.0
            m = min(int(np.ceil(1.25 * need / rate)) + 8, max_draw)
            candidates = self._rng.integers(0, self._size, size=m, dtype=np.int64)
            walked = walk(candidates)
            keep = np.flatnonzero(walked.valid)[:need]
            starts.append(candidates[keep])
            found_parts.append(walked.take(keep))
            found += keep.size
            drawn += m
        if found < batch_size:
            raise RuntimeError(
                f"not enough valid {what}: found {found} of {batch_size} requested{detail} "
                f"after drawing {drawn} candidates from {self._size} stored rows; add more data (check "
                "can_sample() first) or make sure each stream's rows have consecutive steps"
            )
        return np.concatenate(starts), type(found_parts[0]).concat(found_parts)

    def _next_in_stream(self, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(next slot, ok): the linked row, if it still holds the same stream's next step."""
        a = self._arrays
        nxt = a[LINK_KEY][cur]
        ok = (nxt >= 0) & (nxt < self._size)
        safe = np.where(ok, nxt, 0)
        # A link into an overwritten slot fails this check: the slot now holds another stream/step.
        ok &= (a["stream_id"][safe] == a["stream_id"][cur]) & (a["step"][safe] == a["step"][cur] + 1)
        return safe, ok

    def _chain(self, starts: np.ndarray, length: int) -> _Chains:
        """Follow links from each start for length - 1 rows, whatever the episode boundaries."""
        slots = np.empty((len(starts), length), np.int64)
        slots[:, 0] = starts
        valid = np.ones(len(starts), bool)
        for k in range(1, length):
            nxt, ok = self._next_in_stream(slots[:, k - 1])
            valid &= ok
            slots[:, k] = np.where(valid, nxt, slots[:, k - 1])
        return _Chains(valid, slots)

    def _walk(self, starts: np.ndarray, n_step: int, gamma: float) -> _Paths:
        """Follow links from each start for up to n_step transitions, vectorised over starts."""
        a = self._arrays
        m = len(starts)
        valid = np.ones(m, bool)
        walking = np.ones(m, bool)
        cur = starts.astype(np.int64, copy=True)
        reward = np.zeros(m, np.float64)
        discount = np.ones(m, np.float64)
        slots = np.full((m, n_step), -1, np.int64)
        weights = np.zeros((m, n_step), np.float64)
        for k in range(n_step):
            idx = np.flatnonzero(walking)
            if idx.size == 0:
                break
            c = cur[idx]
            nxt, ok = self._next_in_stream(c)
            ok &= ~a["is_last"][c]
            valid[idx[~ok]] = False
            walking[idx[~ok]] = False
            idx, c, nxt = idx[ok], c[ok], nxt[ok]
            reward[idx] += discount[idx] * a["reward"][c]
            slots[idx, k], weights[idx, k] = c, discount[idx]
            discount[idx] *= gamma
            cur[idx] = nxt
            terminated = a["terminated"][c]
            discount[idx[terminated]] = 0.0  # no bootstrap past a true terminal
            walking[idx[terminated | a["truncated"][c]]] = False
        return _Paths(valid, reward, discount, cur, slots, weights)

    def _gather(self, starts: np.ndarray, paths: _Paths) -> dict[str, np.ndarray]:
        a = self._arrays
        batch = {
            "bev": self.bev(starts),
            "state": a["state"][starts],
            "action": a["action"][starts],
            "reward": paths.reward.astype(np.float32),
            "discount": paths.discount.astype(np.float32),
            "next_bev": self.bev(paths.end),
            "next_state": a["state"][paths.end],
            "cost": a["cost"][starts],
        }
        # Feedback was computed for the observation that was sent, i.e. the transition starting at r.
        for key in FEEDBACK_KEYS:
            batch[key] = a[key][starts]
        for key in ("policy_version", "episode_id", "step"):
            batch[key] = a[key][starts]
        # Per-step feedback along the n-step path, so reward terms derived from it (the CLIP bonus)
        # can be added at sample time with the same discounting as the env reward.
        on_path = paths.slots >= 0
        for key in ("clip_margin", "clip_margin_mask", "safety", "safety_mask"):
            batch[f"nstep_{key}"] = np.where(on_path, a[key][np.maximum(paths.slots, 0)], 0.0).astype(np.float32)
        batch["nstep_weight"] = paths.weights.astype(np.float32)
        batch["index"] = starts.astype(np.int64)
        return batch

    # ---- statistics

    def stats(self) -> dict[str, float]:
        """Size, totals, feedback availability per field over stored transition rows, mean policy version."""
        a, n = self._arrays, self._size
        transitions = ~a["is_last"][:n]
        out = {
            "size": float(n),
            "inserted_total": float(self._inserted_total),
            "transitions_total": float(self._transitions_total),
        }
        for key in MASK_KEYS:
            mask = a[key][:n][transitions]
            out[f"feedback_{key.removesuffix('_mask')}"] = float(mask.mean()) if mask.size else 0.0
        out["bev_bytes_per_row"] = self._bev_bytes / n if n else 0.0
        out["policy_version_mean"] = float(a["policy_version"][:n].mean()) if n else 0.0
        return out

    # ---- persistence (the rows themselves are journaled: learners/replay_journal.py)

    def rng_state(self) -> dict[str, Any]:
        """The sampling RNG's state (JSON-serialisable), for a checkpoint."""
        return self._rng.bit_generator.state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        try:
            self._rng.bit_generator.state = state
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"not a valid {type(self._rng.bit_generator).__name__} state ({err})") from err

    def advance(self, rows: int, transitions: int) -> None:
        """Count rows inserted earlier whose slots the ring has overwritten since (a rebuilt buffer
        starts where the original's surviving rows started, so the same rows land in the same slots)."""
        if self._inserted_total:
            raise ValueError("advance() is for an empty buffer about to be rebuilt")
        self._cursor = rows % self._capacity
        self._inserted_total, self._transitions_total = rows, transitions

    def max_stream_id(self) -> int:
        """The largest stream id stored (-1 when empty)."""
        return int(self._arrays["stream_id"][: self._size].max()) if self._size else -1
