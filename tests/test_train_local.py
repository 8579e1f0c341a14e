"""train.py in local mode (one process, no Ray; two workers, so two simulations in the process): a
short run, a resumed one that continues where it stopped, and resumes that must refuse without
touching the run directory."""

import json
import shutil

import pytest
import yaml

import train
from runner.checkpoint import COMPLETE

pytestmark = pytest.mark.sim


def args(tmp_path, *extra):
    return [
        "--config",
        "configs/quickstart.yaml",
        "--config",
        "configs/debug.yaml",
        "run.mode=local",
        "workers.num_workers=2",
        f"run.runs_dir={tmp_path}",
        *extra,
    ]


def snapshot(run_dir):
    """Every file's bytes under the run directory."""
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("runs")
    assert train.main(args(tmp_path)) == 0
    (run_dir,) = tmp_path.glob("quickstart-*")
    return run_dir


def test_local_run_then_resume(finished_run, tmp_path):
    run_dir = tmp_path / finished_run.name
    shutil.copytree(finished_run, run_dir)
    checkpoint = run_dir / "checkpoint"
    assert (checkpoint / COMPLETE).is_file() and (checkpoint / "agent.pt").is_file()
    assert not (run_dir / "checkpoint.partial").exists()
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert "mean" in evaluation and 0.0 <= evaluation["mean"]["route_completion"] <= 1.0
    assert (run_dir / "tb").is_dir() and (run_dir / "learning_curve.png").is_file()
    saved = json.loads((checkpoint / COMPLETE).read_text())
    runtime_counters = json.loads((checkpoint / "runtime.json").read_text())
    first = (run_dir / "progress.jsonl").read_text().strip().splitlines()
    assert saved["env_steps"] >= 400

    assert train.main(["--resume", str(run_dir), "run.total_env_steps=700"]) == 0
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["run"]["total_env_steps"] == 700
    rows = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().strip().splitlines()[len(first) :]]
    assert rows and min(r["env_steps"] for r in rows) >= saved["env_steps"]  # continued, not restarted
    assert max(r["env_steps"] for r in rows) >= 700
    assert min(r["learner_updates"] for r in rows) >= saved["updates"]
    assert max(r["random_actions"] for r in rows) == 0  # the clock is past random_steps: no second warm-up
    resumed = json.loads((checkpoint / "runtime.json").read_text())
    assert runtime_counters["next_stream_id"] == 2  # both workers collected
    assert resumed["next_stream_id"] == runtime_counters["next_stream_id"] + 2  # new streams for the new workers


@pytest.mark.parametrize("damage", ["no marker", "learner.json missing", "agent.pt truncated", "garbage json"])
def test_a_resume_that_cannot_load_refuses_and_changes_nothing(finished_run, tmp_path, damage, caplog):
    run_dir = tmp_path / finished_run.name
    shutil.copytree(finished_run, run_dir)
    checkpoint = run_dir / "checkpoint"
    if damage == "no marker":  # a crash while the checkpoint was being written
        (checkpoint / COMPLETE).unlink()
    elif damage == "learner.json missing":
        (checkpoint / "learner.json").unlink()
    elif damage == "agent.pt truncated":
        data = (checkpoint / "agent.pt").read_bytes()
        (checkpoint / "agent.pt").write_bytes(data[: len(data) // 2])
    else:
        (checkpoint / "learner.json").write_text("{not json")
    before = snapshot(run_dir)
    assert train.main(["--resume", str(run_dir), "run.total_env_steps=700"]) == 2
    assert snapshot(run_dir) == before  # not a byte changed
    assert str(run_dir) in caplog.text
    expected = {
        "no marker": "no complete checkpoint",
        "learner.json missing": "missing learner.json",
        "agent.pt truncated": "agent.pt cannot be loaded",
        "garbage json": "learner.json cannot be read",
    }
    assert expected[damage] in caplog.text


def test_a_resume_with_another_algorithm_refuses_and_keeps_the_config(finished_run, tmp_path, caplog):
    run_dir = tmp_path / finished_run.name
    shutil.copytree(finished_run, run_dir)
    before = snapshot(run_dir)
    assert train.main(["--resume", str(run_dir), "agent.algorithm=sac"]) == 2
    assert "drqv2/small but this agent is sac/small" in caplog.text
    assert snapshot(run_dir) == before  # config.yaml still says drqv2: a plain --resume still works


def test_bad_config_stops_at_start_with_the_field_path(tmp_path, caplog):
    assert train.main(args(tmp_path, "agent.algorithm=ppo")) == 2
    assert "agent.algorithm" in caplog.text and "drqv2, sac, td3" in caplog.text
    assert not list(tmp_path.glob("quickstart-*"))


def test_missing_clip_checkpoint_stops_at_start_with_the_command_to_make_it(tmp_path, caplog):
    assert (
        train.main(
            args(
                tmp_path,
                "feedback.model=clip",
                "feedback.wanted=[clip_margin]",
                "agent.guidance.awag_weight=0",
                f"feedback.clip.checkpoint={tmp_path}/nothing",
            )
        )
        == 2
    )
    assert "python -m teacher_training.clip_training" in caplog.text
    assert not list(tmp_path.glob("quickstart-*"))


def test_a_diverging_learner_stops_the_run_naming_it_and_the_checkpoint(tmp_path, caplog, monkeypatch):
    from learners.actor_critic.drqv2 import DrQv2Agent

    calls = {"n": 0}
    original = DrQv2Agent.critic_loss

    def diverging(self, *args, **kwargs):
        calls["n"] += 1
        loss, metrics = original(self, *args, **kwargs)
        if calls["n"] > 150:  # after the first checkpoint (checkpoint_every_updates=100)
            return loss * float("nan"), metrics | {"critic_loss": float("nan")}
        return loss, metrics

    monkeypatch.setattr(DrQv2Agent, "critic_loss", diverging)
    # One worker: its pull intervals are short enough that update 100's checkpoint comes before update 151.
    assert (
        train.main(
            args(tmp_path, "run.total_env_steps=2000", "learner.checkpoint_every_updates=100", "workers.num_workers=1")
        )
        == 1
    )
    (run_dir,) = tmp_path.glob("quickstart-*")
    assert "the learner failed: update 151" in caplog.text and "critic_loss=nan" in caplog.text
    assert f"continue with train.py --resume {run_dir}" in caplog.text
    assert (run_dir / "checkpoint" / COMPLETE).is_file() and not (run_dir / "evaluation.json").exists()


def test_ctrl_c_stops_with_a_checkpoint_that_loses_nothing_and_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    command = [
        sys.executable,
        "train.py",
        *args(tmp_path, "run.total_env_steps=100000", "run.progress_every_s=1", "workers.num_workers=1"),
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("quickstart-*/progress.jsonl")) or time.monotonic() < deadline - 110:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0][-3000:]
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output[-3000:]
    (run_dir,) = tmp_path.glob("quickstart-*")
    assert "SIGINT: stopped with a checkpoint" in output and not (run_dir / "evaluation.json").exists()
    last = json.loads((run_dir / "progress.jsonl").read_text().strip().splitlines()[-1])
    # Every row the worker produced was shipped (drained) and is in the checkpoint.
    assert last["shipped_rows"] == last["replay_inserted_total"]
    saved = json.loads((run_dir / "checkpoint" / COMPLETE).read_text())
    assert saved["env_steps"] == last["env_steps"] == last["worker_env_steps"]

    assert train.main(["--resume", str(run_dir), f"run.total_env_steps={saved['env_steps'] + 200}"]) == 0
    rows = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().strip().splitlines()]
    resumed = [r for r in rows if r["env_steps"] > saved["env_steps"]]
    assert resumed and resumed[0]["learner_updates"] >= saved["updates"]
    assert max(r["random_actions"] for r in resumed) == 0


def test_a_run_killed_before_its_first_periodic_checkpoint_resumes_with_every_row_it_had_stored(tmp_path):
    """SIGKILL (no chance to checkpoint) minutes before the first periodic checkpoint: the resume takes
    the checkpoint written when the run started and every row of the replay journal."""
    import signal

    from tests.train_process import start_train, wait_for_stored_rows

    process = start_train(
        args(
            tmp_path,
            "run.total_env_steps=100000",
            "run.progress_every_s=1",
            "learner.checkpoint_every_updates=1000000",
            "run.checkpoint_every_s=300",
            "workers.num_workers=1",
        )
    )
    progress = wait_for_stored_rows(process, tmp_path, 400)  # rows stored well past the run's start
    stored_before_kill = json.loads(progress.read_text().strip().splitlines()[-1])["replay_inserted_total"]
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    run_dir = progress.parent
    assert json.loads((run_dir / "checkpoint" / COMPLETE).read_text())["env_steps"] == 0  # the one at the start
    assert train.main(["--resume", str(run_dir), "run.total_env_steps=1"]) == 0  # the budget is spent: no collection
    rows = [json.loads(line) for line in progress.read_text().strip().splitlines()]
    assert rows[-1]["replay_inserted_total"] >= stored_before_kill  # nothing the learner had stored is lost
