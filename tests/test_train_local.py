"""train.py in local mode (one process, no Ray): a short run, then a resumed one."""
import json

import yaml

import train


def args(tmp_path, *extra):
    return ["--config", "configs/quickstart.yaml", "run.local=true", "workers.num_workers=1", "env.town=Generated",
            "run.total_env_steps=400", "workers.random_steps=100", "learner.learning_starts=100",
            "learner.batch_size=8", "learner.samples_per_insert=2", "learner.publish_every_updates=2",
            "eval.routes=[0]", "eval.max_steps=50", f"run.runs_dir={tmp_path}", *extra]


def test_local_run_then_resume(tmp_path):
    assert train.main(args(tmp_path)) == 0
    (run_dir,) = tmp_path.glob("quickstart-*")
    assert (run_dir / "checkpoint" / "agent.pt").is_file() and (run_dir / "checkpoint" / "replay").is_dir()
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert "mean" in evaluation and 0.0 <= evaluation["mean"]["route_completion"] <= 1.0
    assert (run_dir / "tb").is_dir()
    first = (run_dir / "progress.jsonl").read_text().strip().splitlines()

    assert train.main(["--resume", str(run_dir), "run.total_env_steps=700"]) == 0
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["run"]["total_env_steps"] == 700
    rows = (run_dir / "progress.jsonl").read_text().strip().splitlines()
    resumed_steps = [json.loads(line)["env_steps"] for line in rows[len(first):]]
    assert resumed_steps and min(resumed_steps) >= 400 and max(resumed_steps) >= 700  # continued, not restarted


def test_bad_config_stops_at_start_with_the_field_path(tmp_path, caplog):
    assert train.main(args(tmp_path, "agent.algorithm=ppo")) == 2
    assert "agent.algorithm" in caplog.text and "drqv2, sac, td3" in caplog.text
    assert not list(tmp_path.glob("quickstart-*"))


def test_missing_clip_checkpoint_stops_at_start_with_the_command_to_make_it(tmp_path, caplog):
    assert train.main(args(tmp_path, "feedback.model=clip", "feedback.wanted=[clip_margin]",
                           "agent.guidance.awag_weight=0", f"feedback.clip.checkpoint={tmp_path}/nothing")) == 2
    assert "python -m inference.clip_training" in caplog.text
    assert not list(tmp_path.glob("quickstart-*"))
