"""Replay buffer tests. Rows are built so they can be told apart by hand: bev is filled with step % 256,
state[0] = step, state[1] = stream id, and the reward of a row is step + 1 (rewards 1, 2, 3, ... from step 0)."""

import numpy as np
import pytest

from dataset.rows import ROW_SPEC
from learners.replay import ReplayBuffer, empty_chunk, validate_chunk
from learners.replay_journal import ReplayJournal


def rows(stream, steps, *, episode=0, terminated_at=(), truncated_at=(), last_at=()):
    steps = np.asarray(list(steps), np.int64)
    chunk = empty_chunk(len(steps))
    chunk["bev"][:] = (steps % 256).astype(np.uint8)[:, None, None, None]
    chunk["state"][:, 0] = steps
    chunk["state"][:, 1] = stream
    chunk["action"][:, 0] = steps
    chunk["reward"][:] = steps + 1
    chunk["cost"][:] = steps * 0.25
    chunk["terminated"][:] = np.isin(steps, terminated_at)
    chunk["truncated"][:] = np.isin(steps, truncated_at)
    chunk["is_last"][:] = np.isin(steps, last_at)
    chunk["clip_margin"][:] = steps * 0.5
    chunk["clip_margin_mask"][:] = steps % 2
    chunk["safety"][:] = -steps
    chunk["safety_mask"][:] = steps % 3 == 0
    chunk["vlm_action"][:, 0] = steps
    chunk["vlm_action"][:, 1] = -steps
    chunk["vlm_action_mask"][:] = steps % 4 == 0
    chunk["policy_version"][:] = steps // 4
    chunk["episode_id"][:] = episode
    chunk["stream_id"][:] = stream
    chunk["step"][:] = steps
    return chunk


def episode(stream, start, transitions, end="terminated", episode_id=0):
    """T transitions = T + 1 rows; the last transition (row T-1) carries `end`, row T is is_last."""
    final = start + transitions
    return rows(stream, range(start, final + 1), episode=episode_id, **{f"{end}_at": [final - 1]}, last_at=[final])


def concat(*chunks):
    return {key: np.concatenate([c[key] for c in chunks]) for key in ROW_SPEC}


def take(chunk, index):
    return {key: value[index] for key, value in chunk.items()}


def sampled_steps(batch):
    return set(batch["state"][:, 0].astype(int).tolist())


# ------------------------------------------------------------------------------------------- chunks


def test_empty_chunk_matches_row_spec():
    chunk = empty_chunk(3)
    chunk["step"][:] = np.arange(3)  # zeros are fine everywhere else; a stream's steps must increase
    assert validate_chunk(chunk) == 3
    for key, (shape, dtype) in ROW_SPEC.items():
        assert chunk[key].shape == (3, *shape) and chunk[key].dtype == dtype
    assert ROW_SPEC["bev"] == ((15, 96, 96), np.dtype(np.uint8))


@pytest.mark.parametrize(
    "key, breaker, message",
    [
        ("state", lambda c: c["state"].astype(np.float64), r"'state'.*float64.*expected float32"),
        ("bev", lambda c: c["bev"][:, :, :, :95], r"'bev'.*\(2, 15, 96, 95\).*\(N, 15, 96, 96\)"),
        ("action", lambda c: c["action"][:1], r"'action'\] has 1 rows but chunk\['bev'\] has 2"),
        ("reward", lambda c: np.array([1.0, np.nan], np.float32), r"'reward'.*NaN"),
        ("vlm_action", lambda c: np.full((2, 2), np.inf, np.float32), r"'vlm_action'.*NaN/inf"),
        ("safety_mask", lambda c: np.array([0.0, 0.5], np.float32), r"'safety_mask'.*0.0 or 1.0"),
    ],
)
def test_validate_chunk_names_the_bad_key(key, breaker, message):
    chunk = rows(0, range(2))
    chunk[key] = breaker(chunk)
    with pytest.raises(ValueError, match=message):
        validate_chunk(chunk)


def test_validate_chunk_lists_missing_and_extra_keys():
    chunk = rows(0, range(2))
    del chunk["safety"]
    chunk["next_bev"] = chunk["bev"]
    with pytest.raises(ValueError, match=r"missing \['safety'\], extra \['next_bev'\]"):
        validate_chunk(chunk)


def test_validate_chunk_rejects_out_of_order_steps():
    with pytest.raises(ValueError, match="stream 7 has step 3 followed by step 2"):
        validate_chunk(rows(7, [1, 3, 2]))


def test_bad_chunk_inserts_nothing():
    buffer = ReplayBuffer(64)
    buffer.add(rows(0, range(4)))
    bad = rows(0, range(4, 8))
    bad["reward"][2] = np.nan
    with pytest.raises(ValueError, match="reward"):
        buffer.add(bad)
    assert len(buffer) == 4 and buffer.inserted_total == 4
    with pytest.raises(ValueError, match="exceeds the buffer capacity 64"):
        buffer.add(rows(0, range(10, 75)))
    assert len(buffer) == 4


# ----------------------------------------------------------------------------------------- storage


def test_each_step_is_stored_once():
    buffer = ReplayBuffer(64)
    buffer.add(rows(0, range(10)))
    arrays = buffer.arrays
    assert set(arrays) == set(ROW_SPEC) - {"bev"} | {"next_row"}
    assert not [key for key in arrays if key.startswith("next_") and key != "next_row"]
    assert all(arr.shape[0] == 64 for arr in arrays.values())
    assert not arrays["reward"].flags.writeable  # views, not copies to mutate
    bev = buffer.bev(np.arange(10))  # the BEV is stored once per row, compressed, and decodes exactly
    assert bev.shape == (10, 15, 96, 96) and (bev[:, 0, 0, 0] == np.arange(10)).all()
    assert 0 < buffer.bev_bytes < 10 * 1000


def test_the_bev_is_stored_compressed_and_decodes_to_the_same_rows():
    rng = np.random.default_rng(0)
    chunk = rows(0, range(6))
    chunk["bev"][:] = (rng.random(chunk["bev"].shape) < 0.02) * np.uint8(255)  # sparse masks, like the env's
    chunk["bev"][:, 2] = rng.choice(np.array([0, 120, 255], np.uint8), size=(6, 96, 96), p=[0.98, 0.01, 0.01])
    buffer = ReplayBuffer(8)
    buffer.add(chunk)
    np.testing.assert_array_equal(buffer.bev(np.arange(6)), chunk["bev"])
    np.testing.assert_array_equal(buffer.bev(np.array([[5, 0], [2, 2]])), chunk["bev"][[[5, 0], [2, 2]]])
    assert buffer.stats()["bev_bytes_per_row"] < 20_000  # issue 16's budget; raw it is 138,240
    buffer.add(rows(0, range(6, 10)))  # the ring overwrites slots 0 and 1: their old blocks are gone
    assert buffer.bev(np.array([0]))[0, 0, 0, 0] == 8
    np.testing.assert_array_equal(buffer.bev(np.array([2, 5])), chunk["bev"][[2, 5]])
    assert buffer.bev_bytes == sum(len(b) for b in buffer._bev_blocks)  # noqa: SLF001


def test_batches_are_the_rows_that_were_added():
    """What sample() returns is what a raw-array replay of the same rows gives: same RNG draws, same
    slots, the same BEV bytes for obs and next obs."""
    rng = np.random.default_rng(1)
    buffer = ReplayBuffer(256, seed=5)
    raw = np.zeros((256, 15, 96, 96), np.uint8)
    for i in range(6):
        chunk = episode(i % 3, 20 * (i // 3), 19, end="terminated", episode_id=i)
        chunk["bev"][:] = (rng.random(chunk["bev"].shape) < 0.01) * np.uint8(255)
        raw[len(buffer) : len(buffer) + len(chunk["step"])] = chunk["bev"]
        buffer.add(chunk)
    batch = buffer.sample(64, n_step=3, gamma=0.9)
    np.testing.assert_array_equal(batch["bev"], raw[batch["index"]])
    ends = np.array([buffer._walk(np.array([i]), 3, 0.9).end[0] for i in batch["index"]])  # noqa: SLF001
    np.testing.assert_array_equal(batch["next_bev"], raw[ends])
    sequences = buffer.sample_sequences(8, 5)
    np.testing.assert_array_equal(sequences["bev"], raw[sequences["index"]])


def test_counters():
    buffer = ReplayBuffer(64)
    assert buffer.add(episode(0, 0, 3)) == 4
    assert (len(buffer), buffer.inserted_total, buffer.transitions_total) == (4, 4, 3)


# ---------------------------------------------------------------------------------------- sampling


def test_sample_shapes_and_dtypes():
    buffer = ReplayBuffer(64)
    buffer.add(rows(0, range(10)))
    batch = buffer.sample(8, n_step=2)
    expected = {
        "bev": ((8, 15, 96, 96), np.uint8),
        "state": ((8, 10), np.float32),
        "action": ((8, 2), np.float32),
        "reward": ((8,), np.float32),
        "discount": ((8,), np.float32),
        "next_bev": ((8, 15, 96, 96), np.uint8),
        "next_state": ((8, 10), np.float32),
        "cost": ((8,), np.float32),
        "clip_margin": ((8,), np.float32),
        "clip_margin_mask": ((8,), np.float32),
        "safety": ((8,), np.float32),
        "safety_mask": ((8,), np.float32),
        "vlm_action": ((8, 2), np.float32),
        "vlm_action_mask": ((8,), np.float32),
        "expert_action": ((8, 2), np.float32),
        "expert_action_mask": ((8,), np.float32),
        "policy_version": ((8,), np.int64),
        "episode_id": ((8,), np.int64),
        "step": ((8,), np.int64),
        "index": ((8,), np.int64),
        **{
            f"nstep_{key}": ((8, 2), np.float32)
            for key in ("clip_margin", "clip_margin_mask", "safety", "safety_mask", "weight")
        },
    }
    assert set(batch) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert batch[key].shape == shape and batch[key].dtype == dtype, key


def test_next_observation_is_the_following_row_of_the_same_stream_across_interleaved_chunks():
    a, b = 1, 2
    buffer = ReplayBuffer(64)
    buffer.add(rows(a, range(4)))
    buffer.add(rows(b, range(100, 104)))
    mixed = concat(rows(a, [4]), rows(b, [104]), rows(a, [5]), rows(b, [105]))  # row-wise interleaving
    buffer.add(mixed)
    buffer.add(rows(a, range(6, 10)))
    batch = buffer.sample(512)
    step, stream = batch["state"][:, 0], batch["state"][:, 1]
    np.testing.assert_array_equal(batch["next_state"][:, 0], step + 1)
    np.testing.assert_array_equal(batch["next_state"][:, 1], stream)
    np.testing.assert_array_equal(batch["next_bev"][:, 0, 0, 0], (step + 1) % 256)
    np.testing.assert_array_equal(batch["reward"], step + 1)
    np.testing.assert_array_equal(batch["discount"], np.float32(0.99))
    # every start with a known next row is reachable (3->4, 5->6, 103->104 cross chunk boundaries);
    # the streams' newest rows (9, 105) have no next row yet and are never starts
    assert sampled_steps(batch) == set(range(9)) | set(range(100, 105))


def test_n_step_reward_and_discount_by_hand():
    buffer = ReplayBuffer(64)
    buffer.add(rows(0, range(6)))  # rewards 1..6, no episode end
    batch = buffer.sample(256, n_step=3, gamma=0.5)
    # starts 3.. would need row 6, which has not arrived
    assert sampled_steps(batch) == {0, 1, 2}
    first = batch["state"][:, 0] == 0
    np.testing.assert_allclose(batch["reward"][first], 1 + 0.5 * 2 + 0.25 * 3)  # 2.75
    np.testing.assert_allclose(batch["discount"][first], 0.125)
    np.testing.assert_array_equal(batch["next_state"][first, 0], 3)
    s = batch["state"][:, 0]
    np.testing.assert_allclose(batch["reward"], (s + 1) + 0.5 * (s + 2) + 0.25 * (s + 3))


@pytest.mark.parametrize(
    "end, discount_from_0, discount_from_1",
    [
        ("terminated", 0.0, 0.0),
        ("truncated", 0.25, 0.5),  # 0.5 ** transitions taken
    ],
)
def test_path_stops_at_episode_end(end, discount_from_0, discount_from_1):
    buffer = ReplayBuffer(64)
    # episode 0: steps 0, 1 are transitions (rewards 1, 2), step 2 is the final observation;
    # episode 1 starts at step 3 on the same stream and must never be reached from episode 0
    buffer.add(concat(episode(0, 0, 2, end=end), rows(0, range(3, 10), episode=1)))
    batch = buffer.sample(512, n_step=3, gamma=0.5)
    step = batch["state"][:, 0]
    from0, from1 = step == 0, step == 1
    assert from0.any() and from1.any()
    np.testing.assert_allclose(batch["reward"][from0], 1 + 0.5 * 2)
    np.testing.assert_allclose(batch["reward"][from1], 2)
    np.testing.assert_allclose(batch["discount"][from0], discount_from_0)
    np.testing.assert_allclose(batch["discount"][from1], discount_from_1)
    np.testing.assert_array_equal(batch["next_state"][from0 | from1, 0], 2)  # the is_last row
    assert buffer.arrays["is_last"][batch["index"][from0 | from1]].sum() == 0
    assert 2 not in sampled_steps(batch)
    assert (batch["episode_id"][step >= 3] == 1).all()


def test_is_last_rows_are_never_starts():
    buffer = ReplayBuffer(64)
    for i in range(5):
        buffer.add(episode(0, 4 * i, 3, end="terminated" if i % 2 else "truncated", episode_id=i))
    batch = buffer.sample(512, n_step=2)
    assert not buffer.arrays["is_last"][batch["index"]].any()
    assert sampled_steps(batch).isdisjoint({3, 7, 11, 15, 19})


def test_feedback_comes_from_the_start_row():
    buffer = ReplayBuffer(64)
    buffer.add(rows(0, range(20)))
    batch = buffer.sample(256, n_step=3)
    s = batch["state"][:, 0]
    np.testing.assert_array_equal(batch["clip_margin"], s * 0.5)
    np.testing.assert_array_equal(batch["clip_margin_mask"], s % 2)
    np.testing.assert_array_equal(batch["safety"], -s)
    np.testing.assert_array_equal(batch["safety_mask"], s % 3 == 0)
    np.testing.assert_array_equal(batch["vlm_action"], np.stack([s, -s], axis=1))
    np.testing.assert_array_equal(batch["vlm_action_mask"], s % 4 == 0)
    np.testing.assert_array_equal(batch["action"][:, 0], s)
    np.testing.assert_array_equal(batch["cost"], s * 0.25)
    np.testing.assert_array_equal(batch["policy_version"], s // 4)
    np.testing.assert_array_equal(batch["step"], s)


def test_too_few_valid_transitions_raises():
    buffer = ReplayBuffer(64)
    with pytest.raises(RuntimeError, match="not enough valid transitions"):
        buffer.sample(4)
    buffer.add(rows(0, [0]))  # a single row: no next observation yet
    buffer.add(rows(1, [5]))
    assert not buffer.can_sample(1)
    with pytest.raises(RuntimeError, match=r"not enough valid transitions: found 0 of 4"):
        buffer.sample(4)
    buffer.add(rows(0, [1]))  # now 0 -> 1 is a transition
    assert buffer.can_sample(3) and not buffer.can_sample(4)
    assert sampled_steps(buffer.sample(4)) == {0}


def test_sample_rejects_bad_arguments():
    buffer = ReplayBuffer(64)
    buffer.add(rows(0, range(4)))
    for kwargs in ({"batch_size": 0}, {"batch_size": 2, "n_step": 0}, {"batch_size": 2, "gamma": 1.5}):
        with pytest.raises(ValueError):
            buffer.sample(**kwargs)


# -------------------------------------------------------------------------------------------- ring


def test_ring_overwrite_keeps_links_consistent():
    buffer = ReplayBuffer(64)
    for i in range(20):  # 2 streams x 20 chunks x 5 rows = 200 rows through a 64-row ring
        for stream in (1, 2):
            buffer.add(rows(stream, range(5 * i, 5 * i + 5)))
    assert (len(buffer), buffer.inserted_total) == (64, 200)
    batch = buffer.sample(512, n_step=3)
    arrays = buffer.arrays
    end_slots = batch["index"]
    for _ in range(3):  # every hop is the same stream, next step
        nxt = arrays["next_row"][end_slots]
        assert (nxt >= 0).all()
        np.testing.assert_array_equal(arrays["stream_id"][nxt], arrays["stream_id"][end_slots])
        np.testing.assert_array_equal(arrays["step"][nxt], arrays["step"][end_slots] + 1)
        end_slots = nxt
    np.testing.assert_array_equal(batch["next_state"][:, 0], batch["state"][:, 0] + 3)
    np.testing.assert_array_equal(batch["next_state"][:, 1], batch["state"][:, 1])
    # only stored rows are used: the 136 dropped rows are 27 whole chunks (up to stream 1's steps 65..69)
    # plus stream 2's step 65, so stream 1 lives from step 70 and stream 2 from 66; both end at 99
    pairs = set(zip(batch["state"][:, 1].astype(int).tolist(), batch["state"][:, 0].astype(int).tolist()))
    assert pairs == {(1, s) for s in range(70, 97)} | {(2, s) for s in range(66, 97)}
    # and the buffer keeps working after the wrap
    buffer.add(rows(1, range(100, 103)))
    assert sampled_steps(buffer.sample(256)) >= {99, 100, 101}


def test_overwritten_tail_is_not_linked():
    buffer = ReplayBuffer(8)
    buffer.add(rows(1, [0, 1]))  # slots 0, 1; stream 1's tail is slot 1
    buffer.add(rows(2, range(8)))  # slots 2..7, 0, 1: overwrites stream 1 entirely
    buffer.add(rows(2, [8]))  # slot 2; links stream 2's step 7 (slot 1) -> step 8
    buffer.add(rows(1, [2, 3]))  # stream 1's old tail (slot 1) now holds stream 2's row
    arrays = buffer.arrays
    assert arrays["next_row"][1] == 2  # stream 2's link survived; no bogus link to stream 1
    batch = buffer.sample(256)
    np.testing.assert_array_equal(batch["next_state"][:, 1], batch["state"][:, 1])
    np.testing.assert_array_equal(batch["next_state"][:, 0], batch["state"][:, 0] + 1)
    assert (batch["state"][:, 1] == 2).any() and 7 in sampled_steps(batch)


def test_gap_in_steps_is_not_linked():
    buffer = ReplayBuffer(64)
    buffer.add(rows(0, [0, 1]))
    buffer.add(rows(0, [5, 6]))  # dropped rows 2..4: 1 -> 5 is not a transition
    assert sampled_steps(buffer.sample(256)) == {0, 5}


# ------------------------------------------------------------------------------------------- stats


def test_stats_by_hand():
    buffer = ReplayBuffer(64)
    buffer.add(episode(0, 0, 3))  # transitions at steps 0, 1, 2; step 3 is_last
    stats = buffer.stats()
    assert stats["size"] == 4 and stats["inserted_total"] == 4 and stats["transitions_total"] == 3
    assert stats["feedback_clip_margin"] == pytest.approx(1 / 3)  # step % 2 == 1: step 1
    assert stats["feedback_safety"] == pytest.approx(1 / 3)  # step % 3 == 0: step 0
    assert stats["feedback_vlm_action"] == pytest.approx(1 / 3)  # step % 4 == 0: step 0
    assert stats["policy_version_mean"] == pytest.approx(0.0)  # steps 0..3 // 4
    assert ReplayBuffer(4).stats()["feedback_safety"] == 0.0


# ---------------------------------------------------------------------------------------- save/load


def test_link_into_a_changed_slot_is_not_followed():
    # The ring never leaves such a link behind, but sampling re-checks stream/step per hop anyway:
    # corrupt the links so step 0 of stream 1 points at stream 2's row and check it is rejected.
    buffer = ReplayBuffer(64)
    buffer.add(rows(1, range(3)))  # slots 0..2
    buffer.add(rows(2, range(3)))  # slots 3..5
    buffer._arrays["next_row"][0] = 4  # noqa: SLF001 - a deliberately broken link
    batch = buffer.sample(256)
    assert 0 not in batch["index"]
    np.testing.assert_array_equal(batch["next_state"][:, 1], batch["state"][:, 1])


# ------------------------------------------------------------------------------ the journal (disk)


def test_journal_rebuilds_the_same_buffer_and_prunes_what_the_ring_overwrote(tmp_path):
    journal = ReplayJournal(tmp_path / "replay")
    buffer = ReplayBuffer(64, seed=3)
    for i in range(10):
        for stream in (1, 2):
            chunk = episode(stream, 8 * i, 7, end="truncated", episode_id=i)
            buffer.add(chunk)
            journal.append(chunk)
            journal.prune(buffer.inserted_total, buffer.capacity)
    buffer.sample(16)  # advance the RNG so its state matters
    # 160 rows inserted into 64 slots: only segments with a surviving row are kept on disk
    kept = sorted(p.name for p in (tmp_path / "replay").glob("*.npz"))
    assert len(kept) == 8 and kept[0].startswith("0000000012-8-7")
    reopened = ReplayJournal(tmp_path / "replay")
    restored = ReplayBuffer(64, seed=99)
    reopened.rebuild(restored)
    restored.set_rng_state(buffer.rng_state())
    assert (len(restored), restored.inserted_total, restored.transitions_total) == (
        len(buffer),
        buffer.inserted_total,
        buffer.transitions_total,
    )
    for key in buffer.arrays:  # the same rows in the same slots
        np.testing.assert_array_equal(restored.arrays[key], buffer.arrays[key], err_msg=key)
    np.testing.assert_array_equal(restored.bev(np.arange(64)), buffer.bev(np.arange(64)))
    assert restored.bev_bytes == buffer.bev_bytes
    for b in (buffer, restored):  # stream tails survive too: the next chunk links identically
        b.add(rows(1, range(80, 84)))
    x, y = buffer.sample(64, n_step=2), restored.sample(64, n_step=2)
    for key in x:
        np.testing.assert_array_equal(x[key], y[key], err_msg=key)
    assert reopened.chunks_written == 20 and restored.max_stream_id() == 2


def test_the_journal_stores_the_bev_compressed_and_reads_raw_segments_written_before(tmp_path):
    journal = ReplayJournal(tmp_path / "replay")
    chunk = rows(0, range(40))
    journal.append(chunk)
    (segment,) = (tmp_path / "replay").glob("*.npz")
    assert segment.stat().st_size < 40 * 2_000  # raw, the BEV alone is 40 x 138,240 bytes
    old = tmp_path / "replay" / "0000000001-40-40.npz"  # the layout of earlier runs: a raw bev array
    np.savez(old, **rows(0, range(40, 80)))
    restored = ReplayBuffer(128)
    chunks = ReplayJournal(tmp_path / "replay").rebuild(restored)
    assert len(restored) == 80 and [seq for seq, _ in chunks] == [0, 1]
    assert "bev" not in chunks[0][1]  # the rebuilt chunks keep their small fields only: the BEV is in the replay
    np.testing.assert_array_equal(restored.bev(np.arange(80))[:, 0, 0, 0], np.arange(80))


def test_a_damaged_journal_segment_is_named(tmp_path):
    journal = ReplayJournal(tmp_path / "replay")
    journal.append(rows(0, range(4)))
    journal.append(rows(0, range(4, 8)))
    (segment,) = [p for p in (tmp_path / "replay").glob("0000000001-*.npz")]
    segment.write_bytes(segment.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"segment {segment} cannot be read"):
        ReplayJournal(tmp_path / "replay").rebuild(ReplayBuffer(64))
    (tmp_path / "replay" / "0000000002-4-4.npz.tmp").write_bytes(b"cut short")
    ReplayJournal(tmp_path / "replay").clean()
    assert not list((tmp_path / "replay").glob("*.tmp"))  # a write cut short was never acknowledged


def test_nstep_feedback_follows_the_path_with_its_discounts_and_stops_at_a_terminal():
    buffer = ReplayBuffer(64)
    # steps 0..4 are transitions, the one at step 3 terminates; row 4 is the final observation.
    buffer.add(rows(0, range(5), terminated_at=[3], last_at=[4]))
    batch = buffer.sample(64, n_step=3, gamma=0.5)
    by_start = {int(s): i for i, s in enumerate(batch["step"])}
    assert set(by_start) == {0, 1, 2, 3}
    i = by_start[1]  # steps 1, 2, 3 on the path
    np.testing.assert_allclose(batch["nstep_weight"][i], [1.0, 0.5, 0.25])
    np.testing.assert_allclose(batch["nstep_clip_margin"][i], [0.5, 1.0, 1.5])  # margin = step / 2
    np.testing.assert_allclose(batch["nstep_clip_margin_mask"][i], [1, 0, 1])  # mask = step % 2
    np.testing.assert_allclose(batch["nstep_safety_mask"][i], [0, 0, 1])  # mask = step % 3 == 0
    assert batch["reward"][i] == pytest.approx(2 + 0.5 * 3 + 0.25 * 4)
    i = by_start[3]  # the terminal transition: a path of one step, the rest is padding with weight 0
    np.testing.assert_allclose(batch["nstep_weight"][i], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(batch["nstep_clip_margin"][i], [1.5, 0.0, 0.0])


# --------------------------------------------------------------------------------------- sequences


def brute_force_sequence_starts(buffer, length):
    """Every slot from which `length` consecutive rows of one stream are stored, by a plain search."""
    a, n = buffer.arrays, len(buffer)
    where = {(int(a["stream_id"][i]), int(a["step"][i])): i for i in range(n)}
    starts = set()
    for i in range(n):
        sid, step = int(a["stream_id"][i]), int(a["step"][i])
        if all((sid, step + k) in where for k in range(length)):
            starts.add(i)
    return starts


def test_sequences_follow_links_across_episodes_and_match_a_brute_force_search():
    buffer = ReplayBuffer(40, seed=3)
    # two streams interleaved, episodes that end, a gap in stream 2, and a ring that wraps
    buffer.add(concat(episode(1, 0, 4), rows(2, range(100, 106))))
    buffer.add(concat(rows(1, range(5, 12)), rows(2, range(108, 112))))  # stream 2 skips 106, 107
    buffer.add(concat(episode(1, 12, 6, end="truncated"), rows(2, range(112, 125))))
    length = 4
    expected = brute_force_sequence_starts(buffer, length)
    batch = buffer.sample_sequences(512, length)
    assert set(batch["index"][:, 0].tolist()) == expected  # every valid start reachable, no other
    a = buffer.arrays
    np.testing.assert_array_equal(batch["step"], batch["step"][:, :1] + np.arange(length))
    assert (batch["stream_id"] == batch["stream_id"][:, :1]).all()
    np.testing.assert_array_equal(batch["bev"], buffer.bev(batch["index"]))
    np.testing.assert_array_equal(batch["reward"], a["reward"][batch["index"]])
    assert batch["bev"].shape == (512, length, 15, 96, 96) and batch["action"].shape == (512, length, 2)
    assert buffer.can_sample_sequences(8, length) and not buffer.can_sample_sequences(8, 30)


def test_sequence_flags_mark_episode_starts_and_terminal_ends():
    buffer = ReplayBuffer(64)
    first = episode(0, 0, 3)  # rows 0..3, row 2 terminates, row 3 is the final observation
    first["is_first"][0] = True
    first["terminated"][3] = True  # the worker repeats how the episode ended on its is_last row
    second = rows(0, range(4, 8), episode=1)
    second["is_first"][0] = True
    buffer.add(concat(first, second))
    batch = buffer.sample_sequences(256, 8)  # only one run of 8 exists: steps 0..7
    np.testing.assert_array_equal(batch["step"][0], np.arange(8))
    np.testing.assert_array_equal(batch["is_first"][0], [1, 0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(batch["is_last"][0], [0, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch["is_terminal"][0], [0, 0, 0, 1, 0, 0, 0, 0])
    with pytest.raises(RuntimeError, match="not enough valid sequences of 9 rows"):
        buffer.sample_sequences(1, 9)
