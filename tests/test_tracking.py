"""Experiment tracking (run.trackers, runner/tracking.py): TensorBoard stays the default; W&B, an
optional extra, mirrors every scalar and episode into an offline run inside the run directory, with
no login, no network and nothing written to the home directory; a missing wandb is a clear error."""

import json
import struct
import sys
import time
from pathlib import Path

import pytest

from configs.loader import ConfigError, load_config, save_config
from core import Episode
from runner.run_dir import RunLog
from runner.tracking import STEP_METRIC, TrackerError

SCALARS = [
    ({"loss": 0.5, "updates_per_s": 3.25, "feedback/availability": 1.0}, 100),
    ({"loss": 0.25, "updates_per_s": 4.0, "feedback/availability": 0.75}, 200),
]


def test_the_field_takes_known_distinct_names():
    assert load_config("configs/quickstart.yaml").run.trackers == ("tensorboard",)
    assert load_config("configs/quickstart.yaml", ["run.trackers=[tensorboard,wandb]"]).run.trackers == (
        "tensorboard",
        "wandb",
    )
    assert load_config("configs/quickstart.yaml", ["run.trackers=[]"]).run.trackers == ()
    for bad in ("[mlflow]", "[wandb,wandb]", "wandb"):
        with pytest.raises(ConfigError, match=r"run\.trackers"):
            load_config("configs/quickstart.yaml", [f"run.trackers={bad}"])


def test_tensorboard_alone_by_default_and_none_when_asked(tmp_path):
    log = RunLog(tmp_path / "default")
    log.scalars(*SCALARS[0])
    log.close()
    assert log.trackers == ("tensorboard",) and list((tmp_path / "default" / "tb").iterdir())
    assert not (tmp_path / "default" / "wandb").exists()
    run_dir = tmp_path / "none"
    log = RunLog(run_dir, trackers=load_config("configs/quickstart.yaml", ["run.trackers=[]"]).run.trackers)
    log.scalars(*SCALARS[0])
    log.close()
    assert log.trackers == () and not (run_dir / "tb").exists()
    assert json.loads((run_dir / "progress.jsonl").read_text())["loss"] == 0.5  # always written


def test_wandb_asked_for_but_not_installed_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` meets where it is not installed
    with pytest.raises(
        TrackerError,
        match=r"wandb cannot be imported.*pip install \"wandb==0\.31\.0\".*"
        r"run\.trackers=\[tensorboard\]",
    ):
        RunLog(tmp_path, trackers=("tensorboard", "wandb"))
    with pytest.raises(TrackerError, match="unknown"):
        RunLog(tmp_path, trackers=("mlflow",))


def test_wandb_runs_offline_in_the_run_directory_with_every_scalar(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason='W&B is an optional extra: pip install "wandb==0.31.0"')
    home = tmp_path / "home"
    home.mkdir()
    for variable in (
        "WANDB_MODE",
        "WANDB_API_KEY",
        "WANDB_CACHE_DIR",
        "WANDB_DIR",
        "WANDB_PROJECT",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(home))  # no login there, and anything W&B writes outside the run shows
    run_dir = tmp_path / "runs" / "quickstart-wb"
    run_dir.mkdir(parents=True)
    config = load_config("configs/quickstart.yaml", ["run.trackers=[wandb]"])
    save_config(config, run_dir / "config.yaml")  # W&B attaches the resolved config

    log = RunLog(run_dir, trackers=config.run.trackers)
    for values, step in SCALARS:
        log.scalars(values, step)
    log.episodes([Episode(env_steps=150, stream_id=0, episode_return=12.5, route_completion=0.5, driving_score=0.4)])
    log.close()

    assert log.trackers == ("wandb",) and not (run_dir / "tb").exists()
    runs = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, sorted(p.name for p in (run_dir / "wandb").iterdir())
    records = finished_records(runs[0])
    history = [row for kind, row in records if kind == "history"]
    logged = [{k: v for k, v in row.items() if not k.startswith("_")} for row in history]
    assert logged == [{**values, STEP_METRIC: step} for values, step in SCALARS] + [
        {"episode/return": 12.5, "episode/route_completion": 0.5, STEP_METRIC: 150}
    ]
    config = next(row for kind, row in records if kind == "config")
    assert config["run"]["trackers"] == ["wandb"]  # the resolved config travels with the run
    assert not [p for p in home.rglob("*") if p.is_file()]  # nothing in the home directory


def finished_records(path: Path, timeout_s: float = 30.0) -> list:
    """The run file's records once its exit record is there: W&B's service writes the file on its own
    after run.finish() returns (at the latest when the process exits)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = list(offline_records(path))
        if (records and records[-1][0] == "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def offline_records(path: Path):
    """(kind, payload) of each record in a W&B offline run file: a LevelDB-style log (32 KiB blocks,
    7-byte headers: crc32, length, type) of wandb_internal Record protobufs after a 7-byte ':W&B' header.
    History rows come as {key: value}, the run's config as {key: value}."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, position, pending = 32 * 1024, 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            position += left
            continue
        payload, position = data[position + 7 : position + 7 + length], position + 7 + length
        pending += payload
        if kind == 2 or kind == 3:  # first or middle part of a record spanning blocks
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        pending = b""
        which = record.WhichOneof("record_type")
        if which == "history":
            yield (
                which,
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item},
            )
        elif which == "run":
            yield "config", {item.key: json.loads(item.value_json) for item in record.run.config.update}
        else:
            yield which, None


def test_train_without_wandb_installed_stops_at_start_naming_the_fix(tmp_path, monkeypatch, caplog):
    import train

    monkeypatch.setitem(sys.modules, "wandb", None)
    assert (
        train.main(
            [
                "--config",
                "configs/quickstart.yaml",
                "--config",
                "configs/debug.yaml",
                "run.mode=local",
                f"run.runs_dir={tmp_path}",
                "run.trackers=[tensorboard,wandb]",
            ]
        )
        == 2
    )
    assert 'pip install "wandb==0.31.0"' in caplog.text and not list(tmp_path.iterdir())  # nothing written
