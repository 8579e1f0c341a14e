"""RLlib's PPO, SAC and DreamerV3 on Mentor's env (baselines/rllib/, configs/rllib/): the config
files and their loader (fast), the episode callback on the real env (sim), and each algorithm
trained for a few hundred env steps on Town01 by the one documented command, then evaluated on
Town02 by Mentor's EvaluationWorker into the run directory's evaluation table (ray, slow)."""

import csv
import json
import math

import numpy as np
import pytest
import yaml

from baselines.rllib.config import ALGORITHMS, RLLIB_CONFIG_DIR, load_rllib_config, save_rllib_config
from configs.loader import ConfigError

DEBUG = RLLIB_CONFIG_DIR / "debug.yaml"
TABLE_KEYS = (
    "return",
    "route_completion",
    "infraction_penalty",
    "driving_score",
    "collision_rate",
    "cost",
    "mean_speed",
)


# ------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_shipped_configs_train_on_town01_and_evaluate_on_town02(algorithm):
    config, settings = load_rllib_config([RLLIB_CONFIG_DIR / f"{algorithm}.yaml"])
    assert settings.algorithm == algorithm and settings.device == "auto" and settings.num_env_runners == 0
    assert config.env.town == "Town01" and config.eval.town == "Town02" and config.eval.routes == (0, 1, 2, 3, 4)
    assert config.run.name == f"rllib-{algorithm}" and config.run.total_env_steps == 20_000
    assert "training" in settings.calls


def test_debug_overlay_and_overrides_merge_into_the_chosen_section():
    config, settings = load_rllib_config(
        [RLLIB_CONFIG_DIR / "sac.yaml", DEBUG],
        ["rllib.sac.training.actor_lr=1e-4", "run.seed=7", "eval.routes=[2,3]", "rllib.num_envs_per_env_runner=2"],
    )
    training = settings.calls["training"]
    assert training["actor_lr"] == 1e-4 and isinstance(training["actor_lr"], float)  # e-notation is a number
    assert training["train_batch_size_per_learner"] == 16 and training["critic_lr"] == 0.0003  # overlay + file
    assert training["replay_buffer_config"] == {"type": "EpisodeReplayBuffer", "capacity": 2000}  # merged deep
    assert settings.num_envs_per_env_runner == 2
    assert config.run.seed == 7 and config.eval.routes == (2, 3) and config.run.total_env_steps == 300


def test_resolved_config_round_trips_with_only_the_algorithm_it_ran(tmp_path):
    config, settings = load_rllib_config([RLLIB_CONFIG_DIR / "ppo.yaml", DEBUG], ["env.traffic=dense"])
    save_rllib_config(config, settings, tmp_path / "config.yaml")
    resolved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert set(resolved["rllib"]) == {"algorithm", "device", "num_env_runners", "num_envs_per_env_runner", "ppo"}
    assert resolved["env"]["traffic"] == "dense" and resolved["learner"]["batch_size"] == 256  # every Mentor field
    assert load_rllib_config([tmp_path / "config.yaml"]) == (config, settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rllib.algorithm=a2c"], "rllib.algorithm = 'a2c' is invalid: must be one of ppo, sac, dreamerv3"),
        (["rllib.num_workers=2"], "unknown field rllib.num_workers"),
        (["rllib.device=tpu"], "rllib.device = 'tpu' is invalid"),
        (["rllib.num_envs_per_env_runner=0"], "rllib.num_envs_per_env_runner = 0 is invalid"),
        (["rllib.ppo.build_algo.x=1"], "rllib.ppo.build_algo: not an AlgorithmConfig method"),
        (["rllib.sac.training=3"], "rllib.sac.training must be a mapping of keyword arguments"),
        (["run.total_env_steps=-5"], "run.total_env_steps = -5 is invalid"),
        (["env.town_name=Town01"], "unknown field env.town_name"),
    ],
)
def test_bad_settings_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_rllib_config([RLLIB_CONFIG_DIR / "ppo.yaml"], overrides)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rllib.ppo.training.learning_rate=0.1", "rllib.ppo.training: .*unexpected keyword argument 'learning_rate'"),
        (
            "rllib.ppo.training.minibatch_size=5000",
            "rllib.ppo: RLlib rejects the settings: `minibatch_size` \\(5000\\)",
        ),
    ],
)
def test_rllib_checks_its_settings_before_anything_runs(override, message):
    _require_rllib()
    from baselines.rllib.baseline import check_algorithm_config

    config, settings = load_rllib_config([RLLIB_CONFIG_DIR / "ppo.yaml"], [override])
    with pytest.raises(ConfigError, match=message):
        check_algorithm_config(config, settings)


def test_learner_device_auto_is_the_gpu_when_there_is_one():
    import torch

    from baselines.rllib.baseline import use_gpu

    assert use_gpu("auto") == torch.cuda.is_available() and not use_gpu("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="rllib.device = cuda but torch sees no GPU"):
            use_gpu("cuda")


def test_a_config_without_the_rllib_section_says_what_to_give(tmp_path):
    (tmp_path / "plain.yaml").write_text("run: {total_env_steps: 10}\n")
    with pytest.raises(ConfigError, match="no `rllib` section"):
        load_rllib_config([tmp_path / "plain.yaml"])


# --------------------------------------------------------------------------------------------- env


def _require_rllib() -> None:
    try:
        import ray.rllib.algorithms.ppo  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"RLlib does not import ({exc}): install ray[rllib] (pyproject.toml's ray extras)")


@pytest.mark.parametrize("count", [0, 1, 3])
def test_episode_rows_come_back_from_rllibs_compiled_metrics_whatever_their_count(count):
    """MetricsLogger.compile() (what algo.train() returns) unwraps a one-item series into the item."""
    _require_rllib()
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    from baselines.rllib.baseline import EPISODES_KEY, _episode_rows

    metrics = MetricsLogger()
    rows = [
        {"stream_id": i, "episode_return": -1.5 * i, "route_completion": 0.1, "driving_score": 0.05}
        for i in range(count)
    ]
    for row in rows:
        metrics.log_value(EPISODES_KEY, row, reduce="item_series")
    compiled = metrics.compile().get(EPISODES_KEY)
    assert _episode_rows(compiled) == rows


@pytest.mark.sim
@pytest.mark.slow
def test_finished_episode_is_logged_with_the_envs_own_metrics(town01):
    """The callback on a real episode of the real env (driven off the road at full throttle and
    steer), recorded in RLlib's own episode type and metrics logger."""
    _require_rllib()
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    from baselines.rllib.baseline import EPISODES_KEY, INFO_KEYS, episode_callbacks, make_rllib_env
    from configs.schema import EnvConfig

    env = make_rllib_env({"env": EnvConfig(town=town01), "algorithm": "ppo"})
    try:
        obs, info = env.reset(seed=0, options={"route": 0})
        episode = SingleAgentEpisode(
            observations=[obs], infos=[info], observation_space=env.observation_space, action_space=env.action_space
        )
        action = np.array([1.0, 1.0], np.float32)
        for _ in range(600):
            obs, reward, terminated, truncated, info = env.step(action)
            episode.add_env_step(obs, action, reward, infos=info, terminated=terminated, truncated=truncated)
            assert set(info) <= set(INFO_KEYS)  # the RGB BEV and reward terms are not kept
            if terminated or truncated:
                break
    finally:
        env.close()
    assert episode.is_done, "full steer at full throttle should leave the road within 600 steps"
    metrics = MetricsLogger()
    episode_callbacks()().on_episode_end(episode=episode, env_runner=None, metrics_logger=metrics, env_index=1)
    expected = info["episode_metrics"]
    (row,) = metrics.peek(EPISODES_KEY)
    assert row == {
        "stream_id": 1,
        "episode_return": pytest.approx(expected["return"]),
        "route_completion": pytest.approx(expected["route_completion"]),
        "driving_score": pytest.approx(expected["driving_score"]),
    }
    assert row["episode_return"] == pytest.approx(sum(episode.get_rewards()), rel=1e-4, abs=1e-4)


# -------------------------------------------------------------------------------- training (ray)


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster for this module's runs (train_rllib uses a connected one, and leaves it)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _train(algorithm: str, run_dir, capsys, *overrides: str) -> str:
    """The documented command, in this process; returns what it printed."""
    _require_rllib()
    from baselines.rllib.train import main

    capsys.readouterr()
    assert main(["--algo", algorithm, "--config", str(DEBUG), "--run-dir", str(run_dir), *overrides]) == 0
    return capsys.readouterr().out


def _check_run_dir(run_dir, algorithm: str, printed: str, env_steps: int) -> dict:
    from baselines.rllib.baseline import rl_module_path
    from runner.run_dir import EPISODE_COLUMNS

    _, settings = load_rllib_config([run_dir / "config.yaml"])  # resolved, and loads back
    assert settings.algorithm == algorithm
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    progress = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    assert progress[-1]["env_steps"] >= env_steps and progress[-1]["env_steps_per_s"] > 0
    assert any(key.startswith("learner/") for key in progress[-1])
    with open(run_dir / "episodes.csv") as f:
        assert tuple(next(csv.reader(f))) == EPISODE_COLUMNS
    training = json.loads((run_dir / "training.json").read_text())
    assert training["algorithm"] == algorithm and training["env_steps"] >= env_steps
    assert training["trained_steps"] > 0  # the learner updated
    assert rl_module_path(run_dir / "checkpoint").is_dir()
    rows = json.loads((run_dir / "evaluation.json").read_text())
    assert set(rows) == {"route 0", "mean"}
    for key in TABLE_KEYS:
        assert math.isfinite(rows["mean"][key]), key
    assert rows["mean"]["episodes"] == 1
    header = printed.strip().splitlines()[0].split()
    assert {"route_completion", "driving_score", "infraction_penalty"} <= set(header)
    assert printed.strip().splitlines()[-1].split()[0] == "mean"
    assert (run_dir / "learning_curve.png").exists() or training["episodes"] == 0
    return training


@pytest.mark.ray
@pytest.mark.slow
def test_ppo_trains_and_is_evaluated_on_town02(ray_cluster, town01, town02, tmp_path, capsys):
    printed = _train("ppo", tmp_path / "ppo", capsys)
    _check_run_dir(tmp_path / "ppo", "ppo", printed, 300)


@pytest.mark.ray
@pytest.mark.slow
def test_sac_trains_and_is_evaluated_on_town02(ray_cluster, town01, town02, tmp_path, capsys):
    printed = _train("sac", tmp_path / "sac", capsys, "run.total_env_steps=200")
    _check_run_dir(tmp_path / "sac", "sac", printed, 200)


@pytest.mark.ray
@pytest.mark.slow
def test_dreamerv3_trains_at_the_asked_replay_ratio_and_is_evaluated(ray_cluster, town01, town02, tmp_path, capsys):
    printed = _train(
        "dreamerv3",
        tmp_path / "dreamer",
        capsys,
        "run.total_env_steps=100",
        "rllib.dreamerv3.training.training_ratio=4",
    )
    training = _check_run_dir(tmp_path / "dreamer", "dreamerv3", printed, 100)
    # B x T = 32 replayed steps per update, one update per 8 sampled steps after the first 32.
    assert training["updates"] >= 5 and 2 <= training["replay_ratio"] <= 4


@pytest.mark.ray
@pytest.mark.slow
def test_ppo_samples_two_envs_in_one_env_runner(ray_cluster, town01, town02, tmp_path, capsys):
    """Two driving envs in the driver's env runner: needs more than one simulation per process."""
    printed = _train("ppo", tmp_path / "ppo2", capsys, "rllib.num_envs_per_env_runner=2", "run.total_env_steps=200")
    _check_run_dir(tmp_path / "ppo2", "ppo", printed, 200)
    rllib_config = json.loads((tmp_path / "ppo2" / "rllib_config.json").read_text())  # RLlib's resolved config
    assert rllib_config["num_envs_per_env_runner"] == 2 and rllib_config["rollout_fragment_length"] == "auto"
