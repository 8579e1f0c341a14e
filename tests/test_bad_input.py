"""Bad input stops at start with the file or field, the problem and the fix; nothing is written."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import train
from teacher_training.clip_data import read_dataset


def args(tmp_path, *extra):
    return ["--config", "configs/quickstart.yaml", "--config", "configs/debug.yaml", f"run.runs_dir={tmp_path}", *extra]


def test_a_damaged_parquet_dataset_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "town01.parquet"
    pq.write_table(pa.table({"command": np.arange(50_000)}), path)
    data = bytearray(path.read_bytes())
    data[200:2000] = bytes(b ^ 0xFF for b in data[200:2000])  # a corrupted page
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"town01.parquet cannot be read as a Parquet dataset .* collect it again"):
        read_dataset(path)


def test_evaluation_routes_outside_the_suite_stop_the_run_before_it_trains(tmp_path, caplog):
    assert train.main(args(tmp_path, "eval.routes=[0,99]")) == 2
    # the suite is nocrash_eval (Town02) where the maps are found, else the generated town's: 25 routes each
    assert "eval.routes = [0, 99]: [99] not in the evaluation suite" in caplog.text
    assert "which has routes 0-24" in caplog.text
    assert not list(tmp_path.iterdir())


def test_a_maps_directory_that_does_not_exist_is_refused(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("MENTOR_MAPS_DIR", str(tmp_path / "no-such-dir"))
    assert train.main(args(tmp_path, "env.town=null")) == 2
    assert "$MENTOR_MAPS_DIR" in caplog.text and "is not a directory" in caplog.text
    assert not list(tmp_path.glob("quickstart-*"))


def test_an_offline_run_without_a_dataset_names_the_field(tmp_path, caplog):
    assert train.main(args(tmp_path, "run.mode=offline", "run.total_updates=5", "workers.num_workers=1")) == 2
    assert "run.mode = offline needs a dataset: set data.dataset" in caplog.text
    assert not list(tmp_path.iterdir())


def test_a_dataset_directory_that_is_not_one_names_the_field(tmp_path, caplog):
    assert (
        train.main(
            args(
                tmp_path,
                "run.mode=offline",
                "run.total_updates=5",
                "workers.num_workers=1",
                f"data.dataset={tmp_path / 'nothing'}",
            )
        )
        == 2
    )
    assert "data.dataset:" in caplog.text and "dataset.json is missing" in caplog.text and "collect.py" in caplog.text
    assert not list(tmp_path.glob("quickstart-*"))


def test_a_warm_start_from_nothing_names_the_field(tmp_path, caplog):
    assert train.main(args(tmp_path, f"agent.init_from={tmp_path / 'no-run'}")) == 2
    assert "agent.init_from" in caplog.text and "holds no agent checkpoint" in caplog.text
    assert not list(tmp_path.glob("quickstart-*"))


def test_a_run_dir_that_holds_files_is_not_overwritten(tmp_path, caplog):
    run_dir = tmp_path / "taken"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    assert train.main(args(tmp_path, "--run-dir", str(run_dir))) == 2
    assert "already holds files" in caplog.text and (run_dir / "notes.txt").read_text() == "mine"
