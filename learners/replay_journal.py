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
                                              and `bev_lz4_offsets`), so a row takes ~1.6 KB on disk;
                                              segments with a raw `bev` array (written before) load too;
  `journal.json`  the first kept sequence and what the pruned segments held (rows, transitions),
                  written before they are deleted.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from learners.bev_codec import blocks_in, encode_rows, packed_bev
from learners.replay import ARRAY_KEYS, BEV_KEY, ReplayBuffer

_SEGMENT = re.compile(r"(\d{10})-(\d+)-(\d+)\.npz")
_LEDGER = "journal.json"


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

    def append(self, chunk: Mapping[str, np.ndarray], bev_blocks: list[bytes] | None = None) -> None:
        """Write a chunk (`bev_blocks`: its BEV already encoded, when the caller has it)."""
        rows, transitions = len(chunk["step"]), int(np.count_nonzero(~chunk["is_last"]))
        path = self.directory / f"{self._next:010d}-{rows}-{transitions}.npz"
        tmp = path.with_name(path.name + ".tmp")
        bev = packed_bev(encode_rows(chunk[BEV_KEY]) if bev_blocks is None else bev_blocks)
        with open(tmp, "wb") as f:
            np.savez(f, **{key: chunk[key] for key in ARRAY_KEYS}, **bev)
        os.replace(tmp, path)
        self.segments.append(Segment(self._next, rows, transitions, path))
        self._next += 1

    def read(self, segment: Segment) -> tuple[dict[str, np.ndarray], list[bytes]]:
        """A segment's chunk (every ROW_SPEC field but the BEV) and its BEV's LZ4 blocks. The blocks
        are not decoded here: the npz's CRC-32 per member already finds a damaged segment."""
        try:
            with np.load(segment.path, allow_pickle=False) as data:
                chunk = {key: data[key] for key in ARRAY_KEYS}
                # A segment written before the BEV was compressed holds it raw.
                blocks = encode_rows(data[BEV_KEY]) if BEV_KEY in data.files else blocks_in(data)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"replay journal segment {segment.path} cannot be read ({type(err).__name__}: "
                             f"{err}); the run directory's replay is damaged") from err
        if len(chunk["step"]) != segment.rows:
            raise ValueError(f"replay journal segment {segment.path} holds {len(chunk['step'])} rows, its name "
                             f"says {segment.rows}")
        return chunk, blocks

    def rebuild(self, replay: ReplayBuffer) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Insert every stored chunk into an empty `replay` (after counting the pruned rows, so that
        the surviving rows land in their original slots); returns the (sequence, chunk) pairs, the
        chunks without their BEV (it is in the replay)."""
        replay.advance(self.ledger["pruned_rows"], self.ledger["pruned_transitions"])
        chunks = []
        for segment in self.segments:
            chunk, blocks = self.read(segment)
            replay.add(chunk, bev_blocks=blocks)
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
        self.ledger = {"first_sequence": gone[-1].sequence + 1, "pruned_rows": first_row,
                       "pruned_transitions": self.ledger["pruned_transitions"] + sum(s.transitions for s in gone)}
        tmp = self.directory / (_LEDGER + ".tmp")
        tmp.write_text(json.dumps(self.ledger))
        os.replace(tmp, self.directory / _LEDGER)  # the ledger first: a crash now leaves extra files only
        for segment in gone:
            segment.path.unlink(missing_ok=True)
