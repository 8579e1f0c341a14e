"""Nothing is lost without a word: a replay journal with a segment missing, or with a BEV block that is
not the one that was encoded, stops the resume naming the file and changes nothing; a chunk whose BEV
blocks do not match their checksums is refused by the replay before anything is stored. Synthetic
chunks, no simulator, no Ray."""

import json
import logging
import shutil
import zlib

import numpy as np
import pytest

from envs.synthetic_bev import synthetic_bevs
from learners.bev_codec import (
    CRC_KEY,
    ROW_BYTES,
    BevBlocks,
    decode_rows,
    encode_rows,
    pack_chunk,
    undecodable,
    unpack_chunk,
)
from learners.replay import ReplayBuffer
from learners.replay_journal import ReplayJournal
from tests.test_replay import rows


def chunk_of(start: int, n: int = 8, stream: int = 0) -> dict:
    """n rows of one stream from step `start`, with realistic (distinct, sparse) BEV masks."""
    chunk = rows(stream, range(start, start + n))
    chunk["bev"][:] = synthetic_bevs(np.random.default_rng(start), n)
    return chunk


def write_journal(directory, chunks: int = 5, n: int = 8) -> list[dict]:
    journal = ReplayJournal(directory)
    written = [chunk_of(i * n, n) for i in range(chunks)]
    for chunk in written:
        journal.append(chunk)
    return written


def listing(directory) -> dict:
    """Every file under `directory`: its bytes and its modification time, to show nothing was touched."""
    return {
        p.relative_to(directory): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def segment(directory, sequence: int):
    (path,) = directory.glob(f"{sequence:010d}-*.npz")
    return path


def rewrite(path, **members) -> None:
    """Write the npz segment at `path` again with some members replaced (None: left out): a well-formed
    zip whose own CRC-32s describe the changed bytes, as when a block was damaged before it was written."""
    with np.load(path) as data:
        fields = {key: data[key] for key in data.files}
    for key, value in members.items():
        if value is None:
            fields.pop(key)
        else:
            fields[key] = value
    with open(path, "wb") as f:
        np.savez(f, **fields)


def silent_flip(block: bytes) -> bytes:
    """The block with one bit flipped where it still decodes to a whole BEV row (another one): what
    an LZ4 block alone cannot reveal."""
    for position in range(len(block) // 2, len(block)):
        flipped = bytearray(block)
        flipped[position] ^= 0x10
        flipped = bytes(flipped)
        if not undecodable([flipped]).size and not np.array_equal(decode_rows([flipped]), decode_rows([block])):
            return flipped
    raise AssertionError("no flip that still decodes")


def flip_in_segment(path, row: int) -> None:
    with np.load(path) as data:
        data_bytes, offsets = data["bev_lz4"].copy(), data["bev_lz4_offsets"]
    lo, hi = int(offsets[row]), int(offsets[row + 1])
    data_bytes[lo:hi] = np.frombuffer(silent_flip(data_bytes[lo:hi].tobytes()), np.uint8)
    rewrite(path, bev_lz4=data_bytes)


# ------------------------------------------------------------------------------------- contiguity


def test_a_deleted_middle_segment_stops_the_rebuild_naming_it_and_changes_nothing(tmp_path):
    directory = tmp_path / "replay"
    write_journal(directory)
    segment(directory, 2).unlink()
    before = listing(directory)
    replay = ReplayBuffer(128)
    with pytest.raises(ValueError, match=r"is missing 1 segment\(s\): 0000000002-\*\.npz") as caught:
        ReplayJournal(directory).rebuild(replay)
    assert str(directory) in str(caught.value) and "damaged" in str(caught.value)
    assert "restore" in str(caught.value)  # the fix
    assert len(replay) == 0 and replay.inserted_total == 0  # refused before a row went in
    assert listing(directory) == before


def test_several_missing_segments_are_named_as_ranges(tmp_path):
    directory = tmp_path / "replay"
    write_journal(directory, chunks=8)
    for sequence in (1, 2, 3, 5):
        segment(directory, sequence).unlink()
    with pytest.raises(
        ValueError,
        match=r"missing 4 segment\(s\): 0000000001-\*\.npz to 0000000003-\*\.npz, "
        r"0000000005-\*\.npz",
    ):
        ReplayJournal(directory).rebuild(ReplayBuffer(128))


def test_after_pruning_the_first_kept_segment_and_the_last_one_are_required(tmp_path):
    directory = tmp_path / "replay"
    journal, replay = ReplayJournal(directory), ReplayBuffer(24)
    for i in range(6):
        chunk = chunk_of(8 * i)
        replay.add(chunk)
        journal.append(chunk)
        journal.prune(replay.inserted_total, replay.capacity)
    assert json.loads((directory / "journal.json").read_text())["first_sequence"] == 3
    first = segment(directory, 3)
    first.rename(first.with_suffix(".kept"))  # the oldest kept segment: the replay would start 8 rows late
    with pytest.raises(ValueError, match=r"0000000003-\*\.npz .*from 3, the first kept one, to 5"):
        ReplayJournal(directory).rebuild(ReplayBuffer(24))
    first.with_suffix(".kept").rename(first)
    for path in directory.glob("*.npz"):  # every segment gone: the ledger says there were some
        path.unlink()
    with pytest.raises(ValueError, match=r"missing 1 segment\(s\): 0000000003-\*\.npz"):
        ReplayJournal(directory).rebuild(ReplayBuffer(24))


def test_two_segments_with_one_sequence_number_are_refused(tmp_path):
    directory = tmp_path / "replay"
    write_journal(directory, chunks=3)
    shutil.copy(segment(directory, 1), directory / "0000000001-4-4.npz")
    with pytest.raises(ValueError, match=r"2 segments with sequence number 1 \(0000000001-"):
        ReplayJournal(directory).rebuild(ReplayBuffer(128))


# ------------------------------------------------------------------------------------ BEV blocks


def test_blocks_carry_the_crc32_of_their_bytes_from_where_they_are_encoded():
    chunk = chunk_of(0)
    blocks = encode_rows(chunk["bev"])
    assert isinstance(blocks, BevBlocks) and blocks.crc32.dtype == np.uint32
    assert blocks.crc32.tolist() == [zlib.crc32(block) for block in blocks]
    packed = pack_chunk(chunk)
    np.testing.assert_array_equal(packed[CRC_KEY], blocks.crc32)
    _, shipped = unpack_chunk(packed)
    assert list(shipped) == list(blocks) and shipped.damaged().size == 0


def test_the_replay_refuses_a_block_that_does_not_match_its_checksum_and_stores_nothing():
    replay = ReplayBuffer(64)
    replay.add(chunk_of(0))
    arrays, bev_bytes = {key: value.copy() for key, value in replay.arrays.items()}, replay.bev_bytes
    chunk = chunk_of(8)
    blocks = encode_rows(chunk["bev"])
    damaged = BevBlocks([silent_flip(b) if i == 5 else b for i, b in enumerate(blocks)], blocks.crc32)
    with pytest.raises(
        ValueError,
        match=r"chunk\['bev'\] row 5: its LZ4 block .* not the [0-9a-f]{8} it was made "
        r"with .*refused, nothing of it stored",
    ):
        replay.add(chunk, bev_blocks=damaged)
    assert (len(replay), replay.inserted_total, replay.bev_bytes) == (8, 8, bev_bytes)
    for key, value in replay.arrays.items():
        np.testing.assert_array_equal(value, arrays[key], err_msg=key)
    assert replay.add(chunk, bev_blocks=blocks) == 8  # the intact blocks go in


def test_a_packed_chunk_damaged_on_the_wire_is_refused_by_the_replay():
    packed = pack_chunk(chunk_of(0))
    lo, hi = packed["bev_lz4_offsets"][2:4]
    wire = packed["bev_lz4"].copy()
    wire[lo:hi] = np.frombuffer(silent_flip(wire[lo:hi].tobytes()), np.uint8)
    replay = ReplayBuffer(64)
    with pytest.raises(ValueError, match=r"chunk\['bev'\] row 2"):
        replay.add(*unpack_chunk(dict(packed, bev_lz4=wire)))
    assert len(replay) == 0
    with pytest.raises(ValueError, match=f"without '{CRC_KEY}'"):
        unpack_chunk({key: value for key, value in packed.items() if key != CRC_KEY})


def test_a_flipped_bit_in_a_journal_block_is_named_with_its_file(tmp_path):
    directory = tmp_path / "replay"
    write_journal(directory, chunks=3)
    damaged = segment(directory, 1)
    flip_in_segment(damaged, row=6)  # the zip is well-formed: only the block's own checksum tells
    before = listing(directory)
    with pytest.raises(
        ValueError,
        match=rf"segment {damaged}: the BEV blocks of 1 of its 8 rows \(row 6\) do not "
        r"match the CRC-32s",
    ):
        ReplayJournal(directory).rebuild(ReplayBuffer(128))
    assert listing(directory) == before


def test_a_checksum_array_of_the_wrong_length_is_named_with_its_file(tmp_path):
    directory = tmp_path / "replay"
    write_journal(directory, chunks=2)
    damaged = segment(directory, 1)
    with np.load(damaged) as data:
        rewrite(damaged, **{CRC_KEY: data[CRC_KEY][:-1]})
    with pytest.raises(ValueError, match=rf"segment {damaged} cannot be read .*8 BEV blocks need 8"):
        ReplayJournal(directory).rebuild(ReplayBuffer(128))


def test_a_segment_whose_rows_the_replay_refuses_is_named(tmp_path):
    directory = tmp_path / "replay"
    write_journal(directory, chunks=2)
    damaged = segment(directory, 1)
    with np.load(damaged) as data:
        reward = data["reward"].copy()
    reward[3] = np.nan
    rewrite(damaged, reward=reward)
    with pytest.raises(ValueError, match=rf"segment {damaged} cannot be inserted: chunk\['reward'\]"):
        ReplayJournal(directory).rebuild(ReplayBuffer(128))


def test_segments_written_before_the_checksums_still_load_and_are_checked_by_decoding(tmp_path):
    directory = tmp_path / "replay"
    written = write_journal(directory, chunks=3)
    for sequence in range(3):
        rewrite(segment(directory, sequence), **{CRC_KEY: None})
    replay = ReplayBuffer(128)
    ReplayJournal(directory).rebuild(replay)
    np.testing.assert_array_equal(replay.bev(np.arange(24)), np.concatenate([c["bev"] for c in written]))

    old = segment(directory, 2)
    with np.load(old) as data:
        data_bytes, offsets = data["bev_lz4"], data["bev_lz4_offsets"].copy()
    cut = int(offsets[4]) - 1  # the last byte of row 3's block gone: it no longer decodes to a whole row
    offsets[4:] -= 1
    rewrite(old, bev_lz4=np.delete(data_bytes, cut), bev_lz4_offsets=offsets)
    assert undecodable(
        unpack_chunk(
            {"bev_lz4": np.delete(data_bytes, cut), "bev_lz4_offsets": offsets, CRC_KEY: np.zeros(8, np.uint32)}
        )[1]
    ).tolist() == [3]
    with pytest.raises(
        ValueError,
        match=rf"segment {old}: the BEV blocks of 1 of its 8 rows \(row 3\) do not decode "
        r"to one BEV row each \(a segment without checksums\)",
    ):
        ReplayJournal(directory).rebuild(ReplayBuffer(128))


def test_undecodable_finds_blocks_of_another_size():
    blocks = encode_rows(chunk_of(0, n=3)["bev"])
    short = encode_rows(np.zeros((1, 15, 96, 96), np.uint8))[0][:-1]
    assert undecodable([*blocks, short, b""]).tolist() == [3, 4]
    assert ROW_BYTES == 15 * 96 * 96


# ------------------------------------------------------------------------------- train.py --resume


def make_run(run_dir) -> None:
    """A run directory as train.py leaves it (config, journal, checkpoint), without a simulator: a
    local runtime whose learner is fed synthetic chunks, then checkpointed."""
    from configs.loader import CONFIG_DIR, load_config, save_config
    from runner.checkpoint import write_checkpoint
    from runtimes.registry import make_runtime

    config = load_config([CONFIG_DIR / "quickstart.yaml", CONFIG_DIR / "debug.yaml"], ["run.mode=local"])
    runtime = make_runtime(config, run_dir)
    for i in range(5):
        runtime.transport.learner.learner.add(chunk_of(8 * i))  # the Learner in this process
    save_config(config, run_dir / "config.yaml")
    write_checkpoint(run_dir, runtime)
    runtime.shutdown()


@pytest.mark.parametrize("damage", ["deleted middle segment", "flipped bit in a block"])
def test_a_resume_from_a_damaged_journal_exits_2_naming_the_file_and_changes_nothing(tmp_path, damage, caplog):
    import train
    from configs.loader import load_config
    from runner.checkpoint import find_checkpoint
    from runtimes.registry import make_runtime

    run_dir = tmp_path / "run"
    make_run(run_dir)
    intact = tmp_path / "intact"
    shutil.copytree(run_dir, intact)
    check = make_runtime(load_config(intact / "config.yaml"), intact)  # the undamaged copy loads
    check.load(find_checkpoint(intact))
    assert check.env_steps == 40
    check.shutdown()

    middle = segment(run_dir / "replay", 2)
    if damage == "deleted middle segment":
        middle.unlink()
        named = f"{run_dir / 'replay'} is missing 1 segment(s): 0000000002-*.npz"
    else:
        flip_in_segment(middle, row=1)
        named = f"segment {middle}: the BEV blocks of 1 of its 8 rows (row 1)"
    before = listing(run_dir)
    with caplog.at_level(logging.ERROR):
        assert train.main(["--resume", str(run_dir)]) == 2
    assert named in caplog.text and f"nothing in {run_dir} was changed" in caplog.text
    assert listing(run_dir) == before  # not a byte, not a modification time
