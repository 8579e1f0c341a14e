"""The Minari export (integrations/minari_export.py): Mentor episodes written by the dataset sink come
back from `minari.load_dataset` step for step and value for value, joined across shards, with the
unfinished last episode of a stream truncated (or dropped), labels merged, the env spec recorded,
the source untouched; bad datasets and destinations are refused with nothing left behind. The
`sim` test does the same with a dataset collect.py drives on the real simulator."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset.parquet import (
    LABELS_DIR,
    DatasetError,
    ParquetDataset,
    ParquetSink,
    create_dataset,
    list_shards,
    write_parquet_atomically,
)
from dataset.rows import ROW_SPEC
from dataset.schema import SchemaMismatch
from tests.test_replay import episode

minari = pytest.importorskip("minari", reason='the Minari export needs minari: pip install "minari[arrow]==0.5.4"')

from integrations.minari_export import MinariExportError, export_to_minari, main  # noqa: E402 - after the importorskip

META = {"town": "Generated", "traffic": "regular", "route_suite": "generated", "policy": "expert", "backend": "sumo"}
INFO_COLUMNS = (
    "cost",
    "policy_version",
    "step",
    "expert_action",
    "expert_action_mask",
    "vlm_action",
    "vlm_action_mask",
    "clip_margin",
    "clip_margin_mask",
    "safety",
    "safety_mask",
)


def started(chunk):
    chunk["is_first"][0] = True  # tests.test_replay's rows leave it to the caller; a worker sets it
    return chunk


def write_dataset(directory: Path, unfinished_rows: int = 4) -> None:
    """Stream 0: two finished episodes of 5 transitions cut across 3-row shards, then an unfinished one;
    stream 1: one finished episode of 3 transitions. A CLIP label file covers stream 0's first shard."""
    create_dataset(directory, META)
    sink = ParquetSink(directory, stream_id=0, rows_per_shard=3)
    sink.write(started(episode(0, 0, 5, episode_id=0)))
    sink.write(started(episode(0, 6, 5, "truncated", episode_id=1)))
    if unfinished_rows:
        sink.write({k: v[:unfinished_rows] for k, v in started(episode(0, 12, 9, episode_id=2)).items()})
    sink.close()
    sink = ParquetSink(directory, stream_id=1, rows_per_shard=64)
    sink.write(started(episode(1, 100, 3, episode_id=7)))
    sink.close()
    first = list_shards(directory)[0]
    n = len(ParquetDataset(directory).read_shard(first)["step"])
    (directory / LABELS_DIR / "clip").mkdir(parents=True)
    write_parquet_atomically(
        pa.table(
            {"safety": pa.array(np.full(n, 0.75), pa.float32()), "safety_mask": pa.array(np.ones(n), pa.float32())}
        ),
        directory / LABELS_DIR / "clip" / first.name,
    )


def mentor_episodes(directory: Path) -> list[dict[str, np.ndarray]]:
    """The source's rows per (stream, episode), in the order the export writes them."""
    data = ParquetDataset(directory)
    rows = {key: np.concatenate([c[key] for c in data.chunks()]) for key in ROW_SPEC}
    keys = list(dict.fromkeys(zip(rows["stream_id"].tolist(), rows["episode_id"].tolist())))
    return [{k: v[(rows["stream_id"] == s) & (rows["episode_id"] == e)] for k, v in rows.items()} for s, e in keys]


def fingerprint(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def assert_same_episode(loaded, rows: dict[str, np.ndarray], finished: bool) -> None:
    """One Minari episode against the Mentor rows it came from: every row's observation, the
    transitions but the last row's, infos row for row."""
    t = len(rows["step"]) - 1
    assert len(loaded.actions) == len(loaded.rewards) == t and len(loaded.observations["bev"]) == t + 1
    assert np.array_equal(loaded.observations["bev"], rows["bev"])
    assert np.array_equal(loaded.observations["state"], rows["state"])
    assert np.array_equal(loaded.actions, rows["action"][:t]) and np.array_equal(loaded.rewards, rows["reward"][:t])
    assert np.array_equal(loaded.terminations, rows["terminated"][:t])
    expected_truncations = rows["truncated"][:t].copy()
    if not finished:
        expected_truncations[-1] = not rows["terminated"][t - 1]
    assert np.array_equal(loaded.truncations, expected_truncations)
    assert loaded.terminations[-1] or loaded.truncations[-1]
    for key in INFO_COLUMNS:
        assert loaded.infos[key].dtype == rows[key].dtype, key
        assert np.array_equal(loaded.infos[key], rows[key]), key


@pytest.mark.parametrize("data_format", ["parquet", "arrow", "hdf5"])
def test_episodes_come_back_step_for_step_and_value_for_value(tmp_path, monkeypatch, data_format):
    if data_format == "hdf5":
        pytest.importorskip("h5py", reason='Minari\'s hdf5 storage needs h5py: pip install "minari[hdf5]==0.5.4"')
    source, out = tmp_path / "mentor", tmp_path / "minari"
    write_dataset(source)
    before = fingerprint(source)
    report = export_to_minari(source, "mentor/synthetic-v0", out, data_format=data_format)
    assert fingerprint(source) == before  # the source is only read

    expected = mentor_episodes(source)
    assert [len(e["step"]) for e in expected] == [6, 6, 4, 4]  # rows per (stream, episode)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(out))
    loaded = minari.load_dataset("mentor/synthetic-v0")
    # Steps shipped == steps loaded, per episode: T per finished episode, rows - 1 for the unfinished one.
    assert [e["steps"] for e in report.per_episode] == [5, 5, 3, 3]
    assert [len(ep.actions) for ep in loaded.iterate_episodes()] == [5, 5, 3, 3]
    assert loaded.total_episodes == report.episodes == 4 and loaded.total_steps == report.steps == 16
    finished = [True, True, False, True]  # stream 0's third episode is cut; stream 1's follows
    for ep, rows, done in zip(loaded.iterate_episodes(), expected, finished):
        assert_same_episode(ep, rows, done)
    first = next(iter(loaded.iterate_episodes()))
    assert np.all(first.infos["safety"][:3] == 0.75) and np.all(first.infos["safety_mask"][:3] == 1.0)  # labels
    meta = list(loaded.storage.get_episode_metadata(range(4)))
    assert [(m["mentor_stream_id"], m["mentor_episode_id"], m["mentor_unfinished"]) for m in meta] == [
        (0, 0, False),
        (0, 1, False),
        (0, 2, True),
        (1, 7, False),
    ]
    assert loaded.env_spec.id == "mentor/Driving-v0"
    assert loaded.env_spec.kwargs == {
        "town": "Generated",
        "traffic": "regular",
        "route_suite": "generated",
        "backend": "sumo",
    }
    assert loaded.storage.metadata["algorithm_name"] == "expert" and loaded.storage.metadata["jpeg_encoding"] is False
    assert loaded.storage.metadata["data_format"] == data_format
    assert "mentor/synthetic-v0" in minari.list_local_datasets()
    assert not list(out.glob("mentor/.*"))  # the hidden building directory was renamed into place


def test_the_unfinished_episode_can_be_left_out(tmp_path):
    write_dataset(tmp_path / "mentor")
    report = export_to_minari(
        tmp_path / "mentor", "mentor/finished-v0", tmp_path / "minari", data_format="arrow", unfinished="drop"
    )
    assert [(e["mentor_stream_id"], e["mentor_episode_id"]) for e in report.per_episode] == [(0, 0), (0, 1), (1, 7)]
    assert report.unfinished_truncated == 0 and report.skipped_pieces == 1 and report.skipped_rows == 4
    loaded = minari.MinariDataset(report.path / "data")  # also readable from its path, without the variable
    assert loaded.total_episodes == 3 and loaded.total_steps == 13
    assert [len(ep.actions) for ep in loaded.iterate_episodes()] == [5, 5, 3]


def test_rows_before_an_episode_start_are_not_exported(tmp_path, caplog):
    source = tmp_path / "mentor"
    create_dataset(source, META)
    sink = ParquetSink(source, stream_id=0)
    sink.write(episode(0, 0, 4, episode_id=0))  # no is_first: the start of the episode is missing
    sink.write(started(episode(0, 5, 2, episode_id=1)))
    sink.close()
    report = export_to_minari(source, "mentor/partial-v0", tmp_path / "minari")
    assert report.episodes == 1 and report.skipped_pieces == 1 and report.skipped_rows == 5
    assert "does not start an episode" in caplog.text


def break_missing_column(source: Path) -> None:
    shard = list_shards(source)[0].path
    pq.write_table(pq.read_table(shard).drop_columns(["action"]), shard)


@pytest.mark.parametrize(
    "breaker, dataset_id, error, message",
    [
        (lambda s, o: (s / "dataset.json").unlink(), "mentor/x-v0", DatasetError, "dataset.json is missing"),
        (lambda s, o: break_missing_column(s), "mentor/x-v0", SchemaMismatch, "missing column 'action'"),
        (lambda s, o: None, "mentor/no version", MinariExportError, "Malformed dataset ID"),
        (
            lambda s, o: (o / "mentor" / "x-v0").mkdir(parents=True),
            "mentor/x-v0",
            MinariExportError,
            "already at .* minari delete mentor/x-v0",
        ),
        (
            lambda s, o: (s / "dataset.json").write_text(json.dumps({"format_version": 1, "policy": "expert"})),
            "mentor/x-v0",
            MinariExportError,
            "lacks town, traffic",
        ),
    ],
    ids=["not-a-dataset", "missing-column", "malformed-id", "id-taken", "no-env-spec"],
)
def test_what_cannot_be_exported_is_refused_with_nothing_left(tmp_path, breaker, dataset_id, error, message):
    source, out = tmp_path / "mentor", tmp_path / "minari"
    write_dataset(source)
    out.mkdir()
    breaker(source, out)
    before = fingerprint(out)
    with pytest.raises(error, match=message):
        export_to_minari(source, dataset_id, out)
    assert fingerprint(out) == before and not list(out.rglob(".*partial*"))


def test_a_dataset_without_a_whole_episode_is_refused(tmp_path):
    source = tmp_path / "mentor"
    create_dataset(source, META)
    sink = ParquetSink(source, stream_id=0)
    sink.write({k: v[:3] for k, v in started(episode(0, 0, 9)).items()})
    sink.close()
    with pytest.raises(MinariExportError, match="no episode to export"):
        export_to_minari(source, "mentor/x-v0", tmp_path / "minari", unfinished="drop")
    assert not (tmp_path / "minari" / "mentor" / "x-v0").exists()


def test_the_destination_is_never_guessed_nor_inside_the_source(tmp_path, monkeypatch):
    source = tmp_path / "mentor"
    write_dataset(source)
    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    with pytest.raises(MinariExportError, match="no destination: pass --out"):
        export_to_minari(source, "mentor/x-v0")
    with pytest.raises(MinariExportError, match="inside the source dataset"):
        export_to_minari(source, "mentor/x-v0", source / "minari")
    assert not (source / "minari").exists()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "env-root"))
    assert export_to_minari(source, "mentor/x-v0").path == tmp_path / "env-root" / "mentor" / "x-v0"


def test_the_command_line_reports_or_names_the_problem(tmp_path, capsys):
    source = tmp_path / "mentor"
    write_dataset(source)
    assert main([str(source), "--id", "mentor/cli-v0", "--out", str(tmp_path / "m"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 4 and report["steps"] == 16 and report["root"] == str(tmp_path / "m")
    assert main([str(tmp_path / "nothing"), "--id", "mentor/cli-v1", "--out", str(tmp_path / "m")]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.sim
@pytest.mark.slow
def test_a_collected_dataset_loads_back_in_minari(tmp_path, monkeypatch):
    """collect.py drives the expert on the generated town (300 steps in 64-row shards, so the episode
    spans shards); the export loads back with every step and value, and its env spec is the collection's."""
    import collect

    source, out = tmp_path / "expert", tmp_path / "minari"
    assert (
        collect.main(
            [
                "--config",
                "configs/collect/expert.yaml",
                "--config",
                "configs/debug.yaml",
                "run.mode=local",
                "workers.num_workers=1",
                "run.total_env_steps=300",
                f"collect.output={source}",
                "collect.rows_per_shard=64",
                "workers.chunk_size=16",
            ]
        )
        == 0
    )
    before = fingerprint(source)
    report = export_to_minari(source, "mentor/generated-expert-v0", out)
    assert fingerprint(source) == before
    expected = mentor_episodes(source)
    transitions = sum(int(np.count_nonzero(~e["is_last"])) for e in expected)
    assert transitions == 300 and len(list_shards(source)) > 1
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(out))
    loaded = minari.load_dataset("mentor/generated-expert-v0")
    unfinished = sum(not e["is_last"][-1] for e in expected)
    assert loaded.total_steps == report.steps == transitions - unfinished  # an unfinished one loses its last step
    assert loaded.total_episodes == len(expected) == report.episodes
    for ep, rows, entry in zip(loaded.iterate_episodes(), expected, report.per_episode):
        assert len(ep.actions) == entry["steps"] == len(rows["step"]) - 1  # per episode
        assert_same_episode(ep, rows, finished=bool(rows["is_last"][-1]))
        assert np.array_equal(ep.infos["command"], collected_column(source, "command", rows["step"]))
        assert ep.observations["bev"].any() and np.all(ep.infos["expert_action_mask"][:-1] == 1.0)
    assert loaded.env_spec.kwargs["town"] == "Generated" and loaded.env_spec.kwargs["traffic"] == "regular"
    assert loaded.storage.metadata["algorithm_name"] == "expert+dart"


def collected_column(source: Path, key: str, steps: np.ndarray) -> np.ndarray:
    table = pq.read_table(source / "shards", columns=["step", key])
    by_step = dict(zip(table.column("step").to_pylist(), table.column(key).to_pylist()))
    return np.array([by_step[s] for s in steps.tolist()], np.int64)
