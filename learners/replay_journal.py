"""The replay's durable copy: every chunk the learner inserts, appended to disk in insertion order.

A checkpoint then holds only the agent and the counters, with the number of chunks it covers; the
replay is rebuilt by inserting the journal's chunks again, in order, which gives the same slots,
links and counters (insertion is deterministic). Chunks written after the checkpoint are inserted
too: rows the learner had acknowledged survive a learner that dies. Each row is written once (a
full copy of the replay at every checkpoint writes it again and again), and segments whose rows
the ring has overwritten are deleted as the run goes.

Layout of `<directory>`:
  `<sequence:010d>-<rows>-<transitions>.npz`  one npz per chunk, written to a temporary name and
                                              renamed: complete or absent. The BEV is stored as the
                                              replay holds it, one LZ4 block per row (`bev_lz4` bytes
                                              and `bev_lz4_offsets`) with each block's CRC-32 from
                                              where it was encoded (`bev_crc32`), so a row takes
                                              ~1.6 KB on disk; segments written before, with a raw
                                              `bev` array or without `bev_crc32`, load too;
  `journal.json`  the first kept sequence and what the pruned segments held (rows, transitions),
                  written before they are deleted.

Nothing is lost without a word: a resume (rebuild) refuses, naming the file, a journal with a segment
missing between the first kept one and the last, and a segment that cannot be read or whose BEV
blocks are not the ones that were encoded (the npz's own CRC-32 covers the bytes as they were
written, damaged or not; `bev_crc32` covers them from the worker that encoded them). A journal that
ends before the checkpoint's last chunk is refused by Learner.load.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from dataset.rows import ARRAY_KEYS, BEV_KEY
from learners.bev_codec import BevBlocks, blocks_in, encode_rows, packed_bev, undecodable, with_checksums
from learners.replay import ReplayBuffer

_SEGMENT = re.compile(r"(\d{10})-(\d+)-(\d+)\.npz")
_LEDGER = "journal.json"
_NAMED = 5  # missing runs or damaged rows a message lists


@dataclass(frozen=True)
class Segment:
    sequence: int
    rows: int
    transitions: int
    path: Path


class ReplayJournal:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ledger = self._read_ledger()
        self.segments: list[Segment] = self._scan()
        self._next = self.segments[-1].sequence + 1 if self.segments else self.ledger["first_sequence"]

    @property
    def chunks_written(self) -> int:
        """Chunks appended over the whole run, pruned ones included (the next sequence number)."""
        return self._next

    def _read_ledger(self) -> dict:
        path = self.directory / _LEDGER
        if not path.exists():
            return {"first_sequence": 0, "pruned_rows": 0, "pruned_transitions": 0}
        try:
            ledger = json.loads(path.read_text())
            return {key: int(ledger[key]) for key in ("first_sequence", "pruned_rows", "pruned_transitions")}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} cannot be read as the replay journal's ledger ({err})") from err

    def _scan(self) -> list[Segment]:
        segments = []
        for path in self.directory.iterdir():
            match = _SEGMENT.fullmatch(path.name)
            if match and int(match[1]) >= self.ledger["first_sequence"]:
                segments.append(Segment(int(match[1]), int(match[2]), int(match[3]), path))
        segments.sort(key=lambda s: s.sequence)
        return segments

    def clean(self) -> None:
        """Delete what a process that died left behind: half-written segments (never acknowledged) and
        pruned ones. Not done on open: a resume reads the run directory before it changes anything."""
        for path in self.directory.iterdir():
            match = _SEGMENT.fullmatch(path.name)
            if path.name.endswith(".tmp") or (match and int(match[1]) < self.ledger["first_sequence"]):
                path.unlink(missing_ok=True)

    def append(self, chunk: Mapping[str, np.ndarray], bev_blocks: Sequence[bytes] | None = None) -> None:
        """Write a chunk (`bev_blocks`: its BEV already encoded, when the caller has it, and already
        checked against its checksums: ReplayBuffer.add does that before the learner appends)."""
        rows, transitions = len(chunk["step"]), int(np.count_nonzero(~chunk["is_last"]))
        path = self.directory / f"{self._next:010d}-{rows}-{transitions}.npz"
        tmp = path.with_name(path.name + ".tmp")
        bev = packed_bev(encode_rows(chunk[BEV_KEY]) if bev_blocks is None else bev_blocks)
        with open(tmp, "wb") as f:
            np.savez(f, **{key: chunk[key] for key in ARRAY_KEYS}, **bev)
        os.replace(tmp, path)
        self.segments.append(Segment(self._next, rows, transitions, path))
        self._next += 1

    def read(self, segment: Segment) -> tuple[dict[str, np.ndarray], BevBlocks]:
        """A segment's chunk (every ROW_SPEC field but the BEV) and its BEV's LZ4 blocks, checked (not
        decoded) against their checksums; ValueError naming the file when it cannot be read or a block
        is damaged."""
        try:
            with np.load(segment.path, allow_pickle=False) as data:
                chunk = {key: data[key] for key in ARRAY_KEYS}
                # A segment written before the BEV was compressed holds it raw.
                blocks = encode_rows(data[BEV_KEY]) if BEV_KEY in data.files else blocks_in(data)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(
                f"replay journal segment {segment.path} cannot be read ({type(err).__name__}: "
                f"{err}); the run directory's replay is damaged: {_FIX}"
            ) from err
        if not len(chunk["step"]) == len(blocks) == segment.rows:
            raise ValueError(
                f"replay journal segment {segment.path} holds {len(chunk['step'])} rows and "
                f"{len(blocks)} BEV blocks, its name says {segment.rows} rows; the run directory's "
                f"replay is damaged: {_FIX}"
            )
        return chunk, self._checked(segment, blocks)

    def _checked(self, segment: Segment, blocks: Sequence[bytes]) -> BevBlocks:
        """The blocks, once each is the block that was encoded: its CRC-32 matches; in a segment written
        before the checksums, it decodes to exactly one BEV row (all that can be checked there)."""
        if isinstance(blocks, BevBlocks):
            bad, what = blocks.damaged(), "do not match the CRC-32s they were encoded with"
        else:
            bad, what = undecodable(blocks), "do not decode to one BEV row each (a segment without checksums)"
            blocks = with_checksums(blocks)
        if bad.size:
            rows = ", ".join(map(str, bad[:_NAMED].tolist())) + (", ..." if bad.size > _NAMED else "")
            raise ValueError(
                f"replay journal segment {segment.path}: the BEV blocks of {bad.size} of its "
                f"{len(blocks)} rows (row {rows}) {what}; the run directory's replay is damaged: "
                f"{_FIX}"
            )
        return blocks

    def check_contiguous(self) -> None:
        """ValueError naming the directory and the missing files when a segment is missing between the
        first kept one (the ledger's) and the last, or two share a sequence number: a rebuild without
        it would lose its rows and move the env-step clock back, silently. Reads and changes nothing."""
        first = self.ledger["first_sequence"]
        sequences = [segment.sequence for segment in self.segments]
        twice = sorted(sequence for sequence, count in Counter(sequences).items() if count > 1)
        if twice:
            names = [segment.path.name for segment in self.segments if segment.sequence == twice[0]]
            raise ValueError(
                f"replay journal {self.directory} holds {len(names)} segments with sequence number "
                f"{twice[0]} ({', '.join(names)}): only one of them is this run's; the run directory's "
                f"replay is damaged: {_FIX}"
            )
        if sequences or not first:
            last = sequences[-1] if sequences else first
            gaps = _gaps([first - 1, *sequences])
        else:  # the newest segment is never pruned: a ledger (first > 0) with no segment left lost it
            last, gaps = first, [(first, first)]
        if gaps:
            count = sum(hi - lo + 1 for lo, hi in gaps)
            raise ValueError(
                f"replay journal {self.directory} is missing {count} segment(s): {_names(gaps)} "
                f"(every sequence number from {first}, the first kept one, to {last} must be there); "
                "their rows would be lost and the env-step count would move back. The run "
                f"directory's replay is damaged: {_FIX}"
            )

    def rebuild(self, replay: ReplayBuffer) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Insert every stored chunk into an empty `replay` (after counting the pruned rows, so that
        the surviving rows land in their original slots); returns the (sequence, chunk) pairs, the
        chunks without their BEV (it is in the replay). ValueError naming the file, before anything is
        inserted, when a segment is missing; naming the segment when one is damaged."""
        self.check_contiguous()
        replay.advance(self.ledger["pruned_rows"], self.ledger["pruned_transitions"])
        chunks = []
        for segment in self.segments:
            chunk, blocks = self.read(segment)
            try:
                replay.add(chunk, bev_blocks=blocks)
            except ValueError as err:
                raise ValueError(f"replay journal segment {segment.path} cannot be inserted: {err}") from err
            chunks.append((segment.sequence, chunk))
        return chunks

    def prune(self, inserted_total: int, capacity: int) -> None:
        """Delete the oldest segments whose rows have all been overwritten by the ring."""
        overwritten = inserted_total - capacity  # rows with a smaller insertion index are gone
        first_row = self.ledger["pruned_rows"]
        drop = 0
        while drop < len(self.segments) and first_row + self.segments[drop].rows <= overwritten:
            first_row += self.segments[drop].rows
            drop += 1
        if not drop:
            return
        gone, self.segments = self.segments[:drop], self.segments[drop:]
        self.ledger = {
            "first_sequence": gone[-1].sequence + 1,
            "pruned_rows": first_row,
            "pruned_transitions": self.ledger["pruned_transitions"] + sum(s.transitions for s in gone),
        }
        tmp = self.directory / (_LEDGER + ".tmp")
        tmp.write_text(json.dumps(self.ledger))
        os.replace(tmp, self.directory / _LEDGER)  # the ledger first: a crash now leaves extra files only
        for segment in gone:
            segment.path.unlink(missing_ok=True)


_FIX = (
    "restore the missing or damaged file(s) from a copy of the run directory, or start a new run "
    "(train.py --config ...)"
)


def _gaps(sequences: list[int]) -> list[tuple[int, int]]:
    """The (first, last) of each run of numbers missing between consecutive ones of a sorted list."""
    return [(lo + 1, hi - 1) for lo, hi in pairwise(sequences) if hi > lo + 1]


def _names(gaps: list[tuple[int, int]]) -> str:
    """The expected file names of missing sequence numbers, a run of them as one range."""
    names = [f"{lo:010d}-*.npz" if lo == hi else f"{lo:010d}-*.npz to {hi:010d}-*.npz" for lo, hi in gaps]
    return ", ".join(names[:_NAMED]) + (f" and {len(names) - _NAMED} more ranges" if len(names) > _NAMED else "")
