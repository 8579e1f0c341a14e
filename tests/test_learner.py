"""The Learner on synthetic rows: the ratio, publishing, and a diverging update that stops with the
update, the loss term and the last good weights instead of publishing non-finite weights."""

import numpy as np
import pytest
import torch

from configs.loader import CONFIG_DIR, load_config
from learners.learner import Learner, LearnerDiverged
from learners.replay import empty_chunk


def config(*extra):
    return load_config(
        [CONFIG_DIR / "quickstart.yaml", CONFIG_DIR / "debug.yaml"],
        [
            "learner.learning_starts=32",
            "learner.batch_size=8",
            "learner.samples_per_insert=4",
            "learner.publish_every_updates=2",
            *extra,
        ],
    )


def rows(n: int, stream: int = 0, start: int = 0) -> dict:
    rng = np.random.default_rng(start)
    chunk = empty_chunk(n)
    chunk["bev"][:] = (rng.random((n, 15, 96, 96)) < 0.1).astype(np.uint8) * 255
    chunk["action"][:] = rng.uniform(-1, 1, (n, 2))
    chunk["reward"][:] = rng.standard_normal(n)
    chunk["stream_id"][:] = stream
    chunk["step"][:] = np.arange(start, start + n)
    chunk["is_first"][0] = start == 0
    return chunk


def test_updates_follow_the_ratio_and_publish(tmp_path):
    learner = Learner(config(), tmp_path)
    learner.add(rows(31))
    assert learner.train() == 0  # before learning_starts
    learner.add(rows(9, start=31))  # 40 transitions: 4 * (8 + 8) / 8 = 8 updates
    assert learner.train() == 8 and learner.version == 4
    report = learner.report()
    assert report["samples_per_insert"] == pytest.approx(4.0) and report["learner_updates"] == 8
    clock, snapshot = learner.sync(known_version=1)
    assert clock == 40 and snapshot.version == 4
    assert learner.sync(known_version=4)[1] is None


def test_a_non_finite_loss_stops_with_the_update_and_the_term(tmp_path):
    learner = Learner(config(), tmp_path)
    learner.add(rows(40))
    learner.train(max_updates=3)
    original = learner.agent.critic_loss

    def broken(*args, **kwargs):
        loss, metrics = original(*args, **kwargs)
        return loss * float("nan"), metrics | {"critic_loss": float("nan")}

    learner.agent.critic_loss = broken
    with pytest.raises(
        LearnerDiverged, match=r"update 4 \(at 40 env steps\) gave non-finite .*critic_loss=nan.*policy v1"
    ):
        learner.train()
    assert learner.updates == 3 and learner.version == 1  # nothing counted or published after it


def test_non_finite_weights_are_never_published(tmp_path):
    learner = Learner(config(), tmp_path)
    with torch.no_grad():
        next(learner.agent.actor.parameters()).fill_(float("inf"))
    with pytest.raises(LearnerDiverged, match="actor.* hold non-finite values; policy v0 stays"):
        learner.publish()
    assert learner.sync(-1)[1].version == 0


def test_workers_are_held_back_by_the_insert_lead(tmp_path):
    learner = Learner(config("learner.max_insert_lead=16"), tmp_path)
    assert learner.add(rows(32)) == 16  # at learning_starts: the lead counts from there
    assert learner.add(rows(24, start=32)) == -8  # 24 ahead of 0 updates' worth: wait
    learner.train()
    assert learner.inserts_allowed() > 0


def test_a_chunk_packed_by_a_ray_worker_lands_as_the_raw_one(tmp_path):
    """Ray workers ship the BEV LZ4-compressed (cluster/actors.py); the learner stores those blocks
    as they are: the same replay and the same journal as from the raw chunk."""
    from learners.bev_codec import pack_chunk
    from learners.replay_journal import ReplayJournal

    chunk = rows(40)
    chunk["bev"][:, 4:] = 0  # sparse, as the env's masks are (rows() fills them with noise)
    packed = pack_chunk(chunk)
    assert "bev" not in packed and packed["bev_lz4"].nbytes < chunk["bev"].nbytes / 2
    raw_learner, packed_learner = Learner(config(), tmp_path / "raw"), Learner(config(), tmp_path / "packed")
    raw_learner.add(chunk)
    packed_learner.add(packed)
    slots = np.arange(40)
    np.testing.assert_array_equal(packed_learner.replay.bev(slots), chunk["bev"])
    for key, stored in raw_learner.replay.arrays.items():
        np.testing.assert_array_equal(packed_learner.replay.arrays[key], stored, err_msg=key)
    rebuilt = type(raw_learner.replay)(64)
    ReplayJournal(tmp_path / "packed").rebuild(rebuilt)
    np.testing.assert_array_equal(rebuilt.bev(slots), chunk["bev"])
    broken = dict(packed, bev_lz4_offsets=packed["bev_lz4_offsets"][:-1])
    with pytest.raises(ValueError, match="offsets"):
        packed_learner.add(broken)
    assert len(packed_learner.replay) == 40  # nothing of the broken chunk was stored
