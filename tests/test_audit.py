"""Safety-label audit: future-infraction targets that respect episode ends, AUROC by ranks, calibration
bins, and the CLI on a tiny labelled dataset."""

import json
import math
import sys
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset.audit import audit, auroc, calibration_bins, future_event_targets, main
from dataset.parquet import LABELS_DIR, ParquetSink, create_dataset, list_shards, write_parquet_atomically
from tests.test_replay import episode

META = {"town": "Generated", "traffic": "regular", "route_suite": "generated", "policy": "expert"}


# ------------------------------------------------------------------------------------------ targets


def two_episodes():
    """Rows 0-3 are episode 7 (row 3 is_last), rows 4-7 episode 8 (row 7 is_last)."""
    episode_id = np.array([7, 7, 7, 7, 8, 8, 8, 8])
    is_last = np.array([0, 0, 0, 1, 0, 0, 0, 1], bool)
    return episode_id, is_last


def test_k_1_is_the_row_itself_and_is_last_rows_hold_no_event():
    episode_id, is_last = two_episodes()
    cost = np.array([0, 0, 1, 1, 0, 1, 0, 1], np.float32)  # cost on is_last rows is not a transition's
    assert future_event_targets(cost, episode_id, is_last, 1).tolist() == [0, 0, 1, 0, 0, 1, 0, 0]
    assert future_event_targets(cost, episode_id, is_last, 2).tolist() == [0, 1, 1, 0, 1, 1, 0, 0]
    assert future_event_targets(cost, episode_id, is_last, 3).tolist() == [1, 1, 1, 0, 1, 1, 0, 0]


def test_targets_never_cross_into_the_next_episode():
    episode_id, is_last = two_episodes()
    cost = np.array([0, 0, 0, 0, 1, 0, 0, 0], np.float32)  # only the next episode's first step
    assert future_event_targets(cost, episode_id, is_last, 8).tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    same_id = np.zeros(8, np.int64)  # an is_last row ends an episode even when the next has the same id
    assert future_event_targets(cost, same_id, is_last, 8).tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    no_last = np.zeros(8, bool)  # a change of episode_id ends one too
    assert future_event_targets(cost, episode_id, no_last, 8).tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    with pytest.raises(ValueError, match="k must be >= 1"):
        future_event_targets(cost, episode_id, is_last, 0)


# -------------------------------------------------------------------------------------------- auroc


def test_auroc_hand_cases():
    targets = np.array([0, 0, 1, 1], bool)
    assert auroc(np.array([0.1, 0.2, 0.3, 0.4]), targets) == 1.0
    assert auroc(np.array([0.4, 0.3, 0.2, 0.1]), targets) == 0.0
    assert auroc(np.full(4, 0.7), targets) == 0.5
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), targets) == 0.75
    # pairs (pos, neg): 0.5~0.5 half, 0.5>0.2, 0.9>0.5, 0.9>0.2 -> 3.5 / 4
    assert auroc(np.array([0.5, 0.5, 0.2, 0.9]), np.array([1, 0, 0, 1], bool)) == 0.875
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([0, 0], bool)))
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([1, 1], bool)))


def test_auroc_matches_counting_pairs_with_many_ties():
    rng = np.random.default_rng(0)
    scores, targets = rng.integers(0, 5, 200).astype(float), rng.random(200) < 0.3
    pos, neg = scores[targets][:, None], scores[~targets][None, :]
    pairs = np.mean((pos > neg) + 0.5 * (pos == neg))
    assert auroc(scores, targets) == pytest.approx(pairs)


# -------------------------------------------------------------------------------------- calibration


def test_calibration_bins_hand_case():
    cal = calibration_bins(np.array([0.05, 0.15, 0.12, 0.95, 1.0]), np.array([0, 0, 1, 1, 1], bool), bins=10)
    assert cal["count"] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]  # p = 1.0 is in the last bin
    assert cal["mean_predicted"][0] == pytest.approx(0.05) and cal["observed"][0] == 0.0
    assert cal["mean_predicted"][1] == pytest.approx(0.135) and cal["observed"][1] == 0.5
    assert cal["mean_predicted"][9] == pytest.approx(0.975) and cal["observed"][9] == 1.0
    assert cal["observed"][2] is None and cal["mean_predicted"][2] is None
    assert cal["ece"] == pytest.approx((0.05 + 2 * 0.365 + 2 * 0.025) / 5)
    assert cal["brier"] == pytest.approx((0.05**2 + 0.15**2 + 0.88**2 + 0.05**2 + 0.0) / 5)


def test_audit_scores_only_valid_transition_rows():
    episode_id, is_last = two_episodes()
    cost = np.array([0, 0, 1, 0, 0, 0, 0, 0], np.float32)
    unsafe = np.array([0.0, 0.0, 0.9, 0.0, 0.1, 0.1, 0.1, 0.0])
    valid = np.array([1, 0, 1, 1, 1, 1, 1, 1], bool)  # row 1 unlabelled; rows 3 and 7 are is_last
    result = audit(unsafe, valid, cost, episode_id, is_last, ks=(1, 3))
    assert result["rows"] == 5
    assert [(e["k"], e["positives"], e["negatives"]) for e in result["per_k"]] == [(1, 1, 4), (3, 2, 3)]
    # k=3: positives rows 0 (0.0) and 2 (0.9) against three 0.1s: 0.9 wins 3 pairs, 0.0 none -> 3 / 6
    assert result["per_k"][0]["auroc"] == 1.0 and result["per_k"][1]["auroc"] == 0.5
    assert result["calibration"]["k"] == 10 and sum(result["calibration"]["count"]) == 5


# ---------------------------------------------------------------------------------------------- CLI


def labelled_episode(stream, start, episode_id, infraction_at, safety_of):
    """10 transitions (11 rows) from step `start`; cost 1 on transition `infraction_at` (None: none) and
    safety per row index from `safety_of(i)`. The shard's own safety columns are zero."""
    chunk = episode(stream, start, 10, episode_id=episode_id)
    chunk["cost"][:] = 0.0
    if infraction_at is not None:
        chunk["cost"][infraction_at] = 1.0
    chunk["safety"][:], chunk["safety_mask"][:] = 0.0, 0.0
    safety = np.array([safety_of(i) for i in range(11)], np.float32)
    return chunk, safety


def toward(infraction_at):
    """Safety falls to 0 at the infraction (0.1 per step before it) and is 1 after it."""
    return lambda i: (infraction_at - i) / 10 if i <= infraction_at else 1.0


def build_dataset(directory, with_labels=True, infractions=True):
    """Stream 0: episodes 0-3; 0 and 1 (not held out at fraction 0.5) have safety that misleads, 2 and 3
    have safety falling toward their infraction (episode 2 at step 5, episode 3 at its step 1). Stream 1:
    episodes 1000, 1001 without infractions, safety 0.9."""
    create_dataset(directory, META)
    at = (lambda i: i) if infractions else (lambda i: None)
    plan = {
        0: [
            (0, at(5), lambda i: 1.0 - toward(5)(i)),
            (1, at(2), lambda i: 0.95),
            (2, at(5), toward(5)),
            (3, at(1), toward(1)),
        ],
        1: [(1000, None, lambda i: 0.9), (1001, None, lambda i: 0.9)],
    }
    for stream, episodes in plan.items():
        sink, step, safeties = ParquetSink(directory, stream, rows_per_shard=1), 0, []
        for episode_id, infraction_at, safety_of in episodes:
            chunk, safety = labelled_episode(stream, step, episode_id, infraction_at, safety_of)
            sink.write(chunk)
            safeties.append((chunk["step"], safety))
            step += 11
        sink.close()
        if with_labels:
            write_label_files(directory, stream, safeties)


def write_label_files(directory, stream, safeties):
    """One label file per shard, as cluster/label.py writes them (step, safety, safety_mask)."""
    steps = np.concatenate([s for s, _ in safeties])
    values = np.concatenate([v for _, v in safeties])
    (directory / LABELS_DIR / "clip").mkdir(parents=True, exist_ok=True)
    for shard in [s for s in list_shards(directory) if s.stream_id == stream]:
        shard_steps = pq.read_table(shard.path, columns=["step"]).column("step").to_numpy()
        index = np.searchsorted(steps, shard_steps)
        table = pa.table(
            {
                "step": pa.array(shard_steps, pa.int64()),
                "safety": pa.array(values[index], pa.float32()),
                "safety_mask": pa.array(np.ones(len(index)), pa.float32()),
            }
        )
        write_parquet_atomically(table, directory / LABELS_DIR / "clip" / shard.name)


def test_cli_audits_the_held_out_episodes(tmp_path, capsys):
    build_dataset(tmp_path / "data")
    png = tmp_path / "audit.png"
    assert main([str(tmp_path / "data"), "--held-out-fraction", "0.5", "--png", str(png), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["held_out"]["episodes"] == {"0": [2, 3], "1": [1001]}
    assert result["held_out"]["episode_count"] == 3 and result["held_out"]["of_episodes"] == 6
    assert result["transitions"] == 30 and result["infraction_steps"] == 2
    clip = result["scorers"]["clip label"]
    assert clip["rows"] == 30
    # k=1: the two infraction steps; k=5: steps 1-5 of episode 2 and 0-1 of episode 3; k>=10: 0-5 and 0-1
    assert [(e["k"], e["positives"]) for e in clip["per_k"]] == [(1, 2), (5, 7), (10, 8), (20, 8)]
    assert all(e["auroc"] == 1.0 for e in clip["per_k"])  # the misleading early episodes were left out
    assert 0.0 <= clip["calibration"]["ece"] <= 1.0 and sum(clip["calibration"]["count"]) == 30
    assert png.stat().st_size > 0 and result["png"] == str(png)
    assert main([str(tmp_path / "data"), "--held-out-fraction", "0.5", "--png", str(png)]) == 0
    table = capsys.readouterr().out
    assert "stream 0: 2, 3; stream 1: 1001" in table and "clip label AUROC" in table and "1.000" in table


def test_cli_audits_a_world_models_predicted_safety_too(tmp_path, capsys, monkeypatch):
    build_dataset(tmp_path / "data")
    seen = []

    def predicted_safety(run_dir, chunk):  # stands in for learners.world_model.inspect: knows the cost
        seen.append((str(run_dir), sorted(chunk)))
        return np.where(chunk["cost"] > 0, 0.0, 1.0).astype(np.float32)

    inspect = types.ModuleType("learners.world_model.inspect")
    inspect.predicted_safety = predicted_safety
    monkeypatch.setitem(sys.modules, "learners.world_model.inspect", inspect)
    args = [
        str(tmp_path / "data"),
        "--held-out-fraction",
        "0.5",
        "--png",
        str(tmp_path / "a.png"),
        "--json",
        "--ks",
        "1",
        "5",
        "--predicted",
        str(tmp_path / "run"),
    ]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    world = result["scorers"]["world model"]
    assert world["rows"] == 30 and [(e["k"], e["positives"]) for e in world["per_k"]] == [(1, 2), (5, 7)]
    assert world["per_k"][0]["auroc"] == 1.0 and world["per_k"][1]["auroc"] < 1.0
    assert len(seen) == 3 and all(run == str(tmp_path / "run") and "bev" in keys for run, keys in seen)


def test_cli_without_safety_labels_names_the_column_and_the_fix(tmp_path, capsys):
    build_dataset(tmp_path / "data", with_labels=False)
    assert main([str(tmp_path / "data"), "--png", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert "'safety'" in err and "safety_mask" in err and "python -m cluster.label" in err and "--model clip" in err
    assert not (tmp_path / "a.png").exists()


def test_cli_says_so_when_the_held_out_episodes_have_no_infraction(tmp_path, capsys):
    build_dataset(tmp_path / "data", infractions=False)
    assert main([str(tmp_path / "data"), "--png", str(tmp_path / "a.png")]) == 1
    captured = capsys.readouterr()
    assert "no infraction in the" in captured.err and "nan" not in captured.out.lower()
