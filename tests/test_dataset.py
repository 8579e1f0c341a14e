"""Transition datasets on Parquet: the schema round trip, shards of whole episodes with nothing lost,
clear errors for bad files, label merging, and the learner filled from a dataset."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs.loader import load_config
from core import CannotStart
from dataset.parquet import (
    LABELS_DIR,
    SHARDS_DIR,
    DatasetError,
    ParquetDataset,
    ParquetSink,
    create_dataset,
    list_shards,
    read_metadata,
    write_parquet_atomically,
)
from dataset.rows import ROW_SPEC
from dataset.schema import SCHEMA, SchemaMismatch, check_schema, from_table, to_table
from dataset.summary import summarize
from learners.learner import Learner
from tests.test_replay import episode

META = {"town": "Generated", "traffic": "regular", "route_suite": "generated", "policy": "expert"}


def with_extras(chunk, seed=0):
    rng = np.random.default_rng(seed)
    n = len(chunk["step"])
    chunk = dict(chunk)
    chunk["rgb_bev"] = rng.integers(0, 255, (n, 192, 192, 3), dtype=np.uint8)
    chunk["command"] = np.full(n, 4, np.int64)
    chunk["expert_action"][:] = [0.5, -0.5]
    chunk["expert_action_mask"][:] = 1.0
    return chunk


def episodes(stream, count, length, start=0):
    """`count` episodes of `length` transitions on one stream, as one chunk per episode."""
    chunks, step = [], start
    for i in range(count):
        chunks.append(episode(stream, step, length, episode_id=stream * 1000 + i))
        step += length + 1
    return chunks


def test_schema_round_trip_is_exact():
    chunk = with_extras(episode(3, 10, 5))
    table = to_table(chunk)
    assert table.schema.field("bev").type == pa.binary(15 * 96 * 96)
    back = from_table(table, extra=True)
    assert set(back) == set(ROW_SPEC) | {"rgb_bev", "command"}
    assert all(np.array_equal(back[key], chunk[key]) and back[key].dtype == chunk[key].dtype for key in back)
    sliced = from_table(table.slice(2, 3))
    assert np.array_equal(sliced["bev"], chunk["bev"][2:5]) and np.array_equal(sliced["action"], chunk["action"][2:5])


def test_schema_mismatch_names_every_bad_column():
    table = to_table(episode(0, 0, 3)).drop_columns(["reward"])
    table = table.set_column(table.schema.get_field_index("cost"), "cost", pa.array(np.zeros(4), pa.float64()))
    with pytest.raises(SchemaMismatch, match=r"missing column 'reward'.*column 'cost' is double, expected float"):
        check_schema(table.schema, "some.parquet")


def test_sink_writes_whole_episodes_and_loses_nothing(tmp_path):
    create_dataset(tmp_path, META)
    sink = ParquetSink(tmp_path, stream_id=2, rows_per_shard=10)
    shipped = episodes(2, 5, 6)  # 5 episodes of 7 rows
    for chunk in shipped:
        for begin in range(0, 7, 3):  # shipped in pieces that do not follow episode ends
            sink.write({key: value[begin : begin + 3] for key, value in chunk.items()})
    partial = episode(2, 35, 4)
    sink.write({key: value[:3] for key, value in partial.items()})  # an unfinished episode
    shards_before_close = list_shards(tmp_path)
    for shard in shards_before_close:  # every shard before close ends an episode
        assert pq.read_table(shard.path, columns=["is_last"]).column("is_last").to_pylist()[-1]
    sink.close()
    data = ParquetDataset(tmp_path)
    rows = {key: np.concatenate([c[key] for c in data.chunks()]) for key in ROW_SPEC}
    expected = {key: np.concatenate([*(c[key] for c in shipped), partial[key][:3]]) for key in ROW_SPEC}
    assert all(np.array_equal(rows[key], expected[key]) for key in ROW_SPEC)  # shipped == read back
    assert data.rows() == 5 * 7 + 3 == sink.rows_written
    assert len(list_shards(tmp_path)) == len(shards_before_close) + 1
    assert ParquetSink(tmp_path, stream_id=2)._sequence == len(list_shards(tmp_path))  # a reopened sink appends


def test_a_sink_refuses_rows_of_another_stream(tmp_path):
    create_dataset(tmp_path, META)
    with pytest.raises(ValueError, match="own sink"):
        ParquetSink(tmp_path, stream_id=1).write(episode(2, 0, 3))


def test_resuming_with_other_settings_is_refused_and_changes_nothing(tmp_path):
    create_dataset(tmp_path, META)
    before = (tmp_path / "dataset.json").read_text()
    with pytest.raises(DatasetError, match=r"town: 'Generated' on disk, 'Town01' now"):
        create_dataset(tmp_path, META | {"town": "Town01"})
    assert (tmp_path / "dataset.json").read_text() == before


def test_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="dataset.json is missing"):
        read_metadata(tmp_path)
    create_dataset(tmp_path, META)
    with pytest.raises(DatasetError, match="no shards"):
        ParquetDataset(tmp_path)


def write_shards(directory, streams=(0, 1), count=2, length=5):
    create_dataset(directory, META)
    for stream in streams:
        sink = ParquetSink(directory, stream, rows_per_shard=1)
        for chunk in episodes(stream, count, length):
            sink.write(with_extras(chunk, stream))
        sink.close()
    return list_shards(directory)


def test_a_truncated_shard_is_named_and_skipped_only_when_asked(tmp_path):
    shards = write_shards(tmp_path)
    damaged = shards[1].path
    damaged.write_bytes(damaged.read_bytes()[:200])
    with pytest.raises(DatasetError, match=f"{damaged}.*truncated or corrupt.*skip_corrupt"):
        list(ParquetDataset(tmp_path).chunks())
    data = ParquetDataset(tmp_path, skip_corrupt=True)
    assert len(list(data.chunks())) == len(shards) - 1 and data.skipped == [damaged]


def test_a_shard_with_a_wrong_schema_names_its_columns(tmp_path):
    shards = write_shards(tmp_path, streams=(0,), count=1)
    table = pq.read_table(shards[0].path).drop_columns(["cost"])
    pq.write_table(table, shards[0].path)
    with pytest.raises(SchemaMismatch, match=f"{shards[0].path}.*missing column 'cost'"):
        list(ParquetDataset(tmp_path).chunks())


def test_label_files_are_merged_row_for_row(tmp_path):
    shards = write_shards(tmp_path, streams=(0,), count=1)
    n = pq.ParquetFile(shards[0].path).metadata.num_rows
    labels = pa.table(
        {
            "step": pa.array(np.arange(n), pa.int64()),
            "safety": pa.array(np.full(n, 0.25), pa.float32()),
            "safety_mask": pa.array(np.ones(n), pa.float32()),
        }
    )
    (tmp_path / LABELS_DIR / "clip").mkdir(parents=True)
    write_parquet_atomically(labels, tmp_path / LABELS_DIR / "clip" / shards[0].name)
    chunk = next(ParquetDataset(tmp_path).chunks())
    assert np.all(chunk["safety"] == 0.25) and np.all(chunk["safety_mask"] == 1.0)
    assert summarize(tmp_path)["label_coverage"]["safety"] == 1.0
    write_parquet_atomically(labels.slice(1), tmp_path / LABELS_DIR / "clip" / shards[0].name)
    with pytest.raises(DatasetError, match="has 5 rows, its shard 6"):
        next(ParquetDataset(tmp_path).chunks())


def test_summary_counts_episodes_and_bytes(tmp_path):
    write_shards(tmp_path, streams=(0, 1), count=2, length=5)
    s = summarize(tmp_path)
    assert (s["episodes"], s["transitions"], s["rows"], s["shards"]) == (4, 20, 24, 4)
    assert s["terminated"] == 4 and s["label_coverage"]["expert_action"] == 1.0
    assert sum(s["steer_histogram"]) == 20 and s["bytes_per_transition"] > 0
    json.dumps(s)  # printable as JSON


def offline_config(dataset, *extra):
    return load_config(
        [],
        [
            "run.mode=offline",
            f"data.dataset={dataset}",
            "run.total_updates=4",
            "learner.batch_size=4",
            "agent.algorithm=td3bc",
            "workers.num_workers=1",
            *extra,
        ],
    )


def test_the_learner_learns_from_a_dataset_without_env_steps(tmp_path):
    write_shards(tmp_path / "data", streams=(0, 1), count=2, length=5)
    learner = Learner(offline_config(tmp_path / "data"), tmp_path / "replay")
    assert learner.offline.transitions_total == 20 and learner.env_steps == 0
    assert learner.train(max_updates=3) == 3
    assert learner.journal.chunks_written == 0  # dataset rows are never journaled


def test_online_batches_mix_in_the_dataset_at_the_configured_fraction(tmp_path):
    write_shards(tmp_path / "data", streams=(7,), count=4, length=5)
    config = load_config(
        [],
        [
            f"data.dataset={tmp_path / 'data'}",
            "data.offline_fraction=0.25",
            "learner.batch_size=8",
            "workers.num_workers=1",
            "run.mode=local",
            "learner.learning_starts=0",
        ],
    )
    learner = Learner(config, tmp_path / "replay")
    for chunk in episodes(3, 3, 5):
        learner.add(chunk)
    batch, _ = learner._sample()
    from_dataset = int(np.sum(batch["episode_id"] >= 7000))
    assert len(batch["reward"]) == 8 and from_dataset == 2


def test_a_missing_dataset_stops_the_learner_naming_the_field(tmp_path):
    with pytest.raises(CannotStart, match="data.dataset.*dataset.json is missing"):
        Learner(offline_config(tmp_path / "nothing"), tmp_path / "replay")


def test_an_offline_config_without_a_dataset_names_the_field():
    from configs.loader import ConfigError

    with pytest.raises(ConfigError, match="run.mode = offline needs a dataset: set data.dataset"):
        load_config([], ["run.mode=offline", "run.total_updates=5", "workers.num_workers=1"])


def test_bev_storage_is_compact(tmp_path):
    """Consecutive BEVs of a drive differ in a few pixels: zstd pages keep them small (the figure the
    closing note reports comes from a real collection; here a synthetic drive of moving boxes)."""
    create_dataset(tmp_path, META)
    chunk = episode(0, 0, 63)
    chunk["bev"][:] = 0
    for i in range(64):
        chunk["bev"][i, 0, 20:70, 30:60] = 255  # road
        chunk["bev"][i, 3, 10 + i % 40 : 20 + i % 40, 40:45] = 255  # a moving car
    sink = ParquetSink(tmp_path, 0)
    sink.write(chunk)
    sink.close()
    size = sum(p.stat().st_size for p in (tmp_path / SHARDS_DIR).glob("*.parquet"))
    assert size / 64 < 2000  # bytes per row, against 138,240 raw
    assert SCHEMA.names == list(ROW_SPEC)


def test_pandas_reads_the_shards_as_they_are(tmp_path):
    import pandas as pd

    write_shards(tmp_path, streams=(0, 1), count=1, length=3)
    frame = pd.read_parquet(tmp_path / SHARDS_DIR, columns=["stream_id", "step", "action", "expert_action"])
    assert len(frame) == 8 and sorted(frame["stream_id"].unique()) == [0, 1]
    assert list(frame["expert_action"].iloc[0]) == [0.5, -0.5]
