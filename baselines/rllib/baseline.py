"""RLlib's algorithms (new API stack, PyTorch) as baselines on Mentor's driving environment: what
every algorithm shares. One algorithm is one file (baselines/rllib/config.py ALGORITHMS names it)
holding an `ALGORITHM` object, an `RllibAlgorithm`: RLlib's config class with its RLModule spec, the
observation it takes, and how its checkpoint drives as a Mentor Policy.

    config, settings = load_rllib_config(["configs/rllib/ppo.yaml"])
    result = run_baseline(config, settings, "runs/rllib-ppo")   # train on env.town, then evaluate

The env is exactly the one Mentor's agents drive (workers.assembly.make_env on the config's `env`
section: town, traffic, route suite, backend), registered for RLlib as ENV_NAME, with the step infos
slimmed (RLlib keeps every step's info with the episode; the driving env's carry a 192 x 192 RGB BEV)
and the algorithm's own observation wrapper on top. Training runs `algo.train()` until
run.total_env_steps env steps are sampled (or run.time_limit_s passes) and writes Mentor's run
directory: config.yaml (resolved, with the rllib section), tb/ (TensorBoard), progress.jsonl,
episodes.csv (the env's own episode metrics, from every env runner), checkpoint/ (RLlib's
Algorithm checkpoint, every run.checkpoint_every_s and at the end), training.json, then
evaluation.json (the metric table of workers.evaluation.EvaluationWorker on the evaluation town's
suite, eval_env_config: Town02's nocrash_eval where maps exist, greedy actions) and
learning_curve.png.

Only cluster/ imports Ray; RLlib is imported on first use (it takes seconds).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from baselines.rllib.config import ALGORITHMS, RllibSettings, save_rllib_config
from configs.loader import ConfigError
from configs.schema import Config, EnvConfig
from core import Episode, Policy
from runner.run_dir import RunLog, plot_learning_curve

logger = logging.getLogger(__name__)

ENV_NAME = "mentor-driving-v0"  # the RLlib (tune registry) name of Mentor's env
EPISODES_KEY = "mentor_episodes"  # the env runners' metric holding each finished episode's row
CHECKPOINT_DIR = "checkpoint"
# Infos the episodes keep: these scalars are all training and the callbacks need.
INFO_KEYS = ("route_completion", "infractions", "episode_metrics", "route")


# ---------------------------------------------------------------------------------------- algorithm


class RllibAlgorithm:
    """What one algorithm file provides; its methods' defaults fit a stateless module on the
    driving env's own Dict observation (PPO, SAC)."""

    name = ""

    def algorithm_config(self):
        """A fresh RLlib AlgorithmConfig of this algorithm with its RLModule spec."""
        raise NotImplementedError

    def wrap_env(self, env: gym.Env) -> gym.Env:
        """The observation this algorithm takes (default: the env's {"bev", "state"} Dict)."""
        return env

    def finalize(self, algo_config):
        """Settings derived from the others, after the config file's (default: none)."""
        return algo_config

    def summary(self, result: dict, algo_config, env_steps: int) -> dict[str, Any]:
        """Algorithm-specific entries of training.json (default: none)."""
        return {}

    def load_policy(self, checkpoint_dir: str | Path) -> Policy:
        """The trained RLModule of an Algorithm checkpoint as Mentor's Policy."""
        return ModulePolicy(load_module(checkpoint_dir))


def load_algorithm(name: str) -> RllibAlgorithm:
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown RLlib algorithm {name!r}: use one of {', '.join(ALGORITHMS)}")
    return importlib.import_module(ALGORITHMS[name]).ALGORITHM


# ---------------------------------------------------------------------------------------------- env


class SlimInfo(gym.Wrapper):
    """Keeps only the small info entries (INFO_KEYS): RLlib stores every step's info."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, _slim(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, _slim(info)


def _slim(info: dict) -> dict:
    return {k: info[k] for k in INFO_KEYS if k in info}


def make_rllib_env(env_context) -> gym.Env:
    """The env RLlib creates from its env_config {"env": EnvConfig, "algorithm": name}."""
    from workers.assembly import make_env

    env_config: EnvConfig = env_context["env"]
    return load_algorithm(env_context["algorithm"]).wrap_env(SlimInfo(make_env(env_config, rgb_bev=False)))


def register_env() -> None:
    """Mentor's env under ENV_NAME in RLlib's (tune's) registry, where remote env runners find it."""
    from ray.tune.registry import register_env as tune_register_env

    tune_register_env(ENV_NAME, make_rllib_env)


def episode_callbacks():
    """An RLlibCallback class that logs each finished episode's row (the env's own episode metrics,
    from the last info: RLlib's episode objects here are chunks, whose returns miss the earlier
    chunks) as an item series: the result of every algo.train() lists those of all env runners."""
    from ray.rllib.callbacks.callbacks import RLlibCallback

    class DrivingEpisodes(RLlibCallback):
        def on_episode_end(self, *, episode, env_runner=None, metrics_logger=None, env_index=0, **kwargs):
            infos = episode.get_infos(-1) if len(episode) else {}
            result = infos.get("episode_metrics") if isinstance(infos, dict) else None
            if not result or metrics_logger is None:
                return
            runner = int(getattr(env_runner, "worker_index", 0) or 0)
            num_envs = int(getattr(env_runner, "num_envs", 1) or 1)
            row = {
                "stream_id": runner * num_envs + int(env_index or 0),
                "episode_return": float(result["return"]),
                "route_completion": float(result["route_completion"]),
                "driving_score": float(result["driving_score"]),
            }
            metrics_logger.log_value(EPISODES_KEY, row, reduce="item_series")

    return DrivingEpisodes


# ------------------------------------------------------------------------------------------- config


def use_gpu(device: str) -> bool:
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("rllib.device = cuda but torch sees no GPU here; use auto or cpu")
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def build_algorithm_config(config: Config, settings: RllibSettings):
    """RLlib's AlgorithmConfig for this run: the algorithm file's, on Mentor's env of `config.env`,
    with the env runners, learner device and seed, then the config file's algorithm section."""
    algorithm = load_algorithm(settings.algorithm)
    register_env()
    algo_config = (
        algorithm.algorithm_config()
        .environment(ENV_NAME, env_config={"env": config.env, "algorithm": settings.algorithm})
        .env_runners(num_env_runners=settings.num_env_runners, num_envs_per_env_runner=settings.num_envs_per_env_runner)
        .learners(num_learners=0, num_gpus_per_learner=1 if use_gpu(settings.device) else 0)
        .callbacks(episode_callbacks())
        .debugging(seed=config.run.seed)
    )
    for method, kwargs in settings.calls.items():
        try:
            getattr(algo_config, method)(**kwargs)
        except TypeError as exc:
            raise ConfigError(
                f"rllib.{settings.algorithm}.{method}: {exc}; the keys are the keyword arguments of "
                f"RLlib's {type(algo_config).__name__}.{method}()"
            ) from exc
    return algorithm.finalize(algo_config)


def check_algorithm_config(config: Config, settings: RllibSettings) -> None:
    """RLlib's own validation of the run's AlgorithmConfig, before any process starts (seconds:
    RLlib imports), as a ConfigError naming the section."""
    algo_config = build_algorithm_config(config, settings)
    try:
        algo_config.validate()
    except ValueError as exc:
        raise ConfigError(f"rllib.{settings.algorithm}: RLlib rejects the settings: {exc}") from exc


def _plain_config(algo_config) -> dict:
    """The JSON-serialisable part of RLlib's resolved config (rllib_config.json)."""
    out = {}
    for key, value in algo_config.to_dict().items():
        try:
            out[key] = json.loads(json.dumps(value))
        except (TypeError, ValueError):
            continue
    return out


# ----------------------------------------------------------------------------------------- training


def connect_ray(config: Config) -> bool:
    """A Ray cluster for the run: the connected one, run.ray_address, the job's ($RAY_ADDRESS), or
    a new local one. True when this call started it (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = config.run.ray_address or ("auto" if os.environ.get("RAY_ADDRESS") else "local")
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return True


def train_rllib(config: Config, settings: RllibSettings, run_dir: str | Path) -> dict[str, Any]:
    """Trains the algorithm until run.total_env_steps sampled env steps (or run.time_limit_s), writing
    the run directory; returns the training summary (also training.json). A KeyboardInterrupt saves
    a checkpoint first."""
    algorithm = load_algorithm(settings.algorithm)
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_rllib_config(config, settings, run_dir / "config.yaml")
    log = RunLog(run_dir, trackers=config.run.trackers)  # episodes.csv has its header from the start
    if config.learner.torch_threads:  # the learner and (num_env_runners 0) the env runner live here
        torch.set_num_threads(config.learner.torch_threads)
    started_ray = connect_ray(config)
    algo = None
    started = time.monotonic()
    try:
        algo_config = build_algorithm_config(config, settings)
        (run_dir / "rllib_config.json").write_text(json.dumps(_plain_config(algo_config), indent=1))
        algo = algo_config.build_algo()
        progress = _Progress(config, settings, log, time.monotonic())
        try:
            result = progress.run(algo, run_dir)
        except KeyboardInterrupt:
            logger.warning(
                "interrupted at %d env steps: saving a checkpoint to %s", progress.env_steps, run_dir / CHECKPOINT_DIR
            )
            save_checkpoint(algo, run_dir)
            raise
        trained = time.monotonic()
        checkpoint = save_checkpoint(algo, run_dir)
        summary = {
            **progress.summary(result, started, trained),
            "checkpoint": str(checkpoint),
            **algorithm.summary(result, algo_config, progress.env_steps),
        }
        log.write_json("training.json", summary)
        logger.info(
            "%s: trained %d env steps in %.0f s (%.1f env steps/s); checkpoint %s",
            settings.algorithm,
            summary["env_steps"],
            summary["wall_time_s"],
            summary["env_steps_per_s"],
            checkpoint,
        )
        return summary
    finally:
        if algo is not None:
            algo.stop()  # closes the envs: libsumo runs one simulation per process
        log.close()
        if started_ray:
            import ray

            ray.shutdown()


class _Progress:
    """The training loop's clock, episodes and logs."""

    def __init__(self, config: Config, settings: RllibSettings, log: RunLog, built: float):
        self.config, self.settings, self.log, self.built = config, settings, log, built
        self.env_steps, self.iterations = 0, 0
        self.episodes: list[Episode] = []
        self.last_checkpoint = built

    def run(self, algo, run_dir: Path) -> dict:
        run = self.config.run
        result: dict = {}
        while self.env_steps < run.total_env_steps:
            result = algo.train()
            self.iterations += 1
            self.record(result)
            now = time.monotonic()
            if run.checkpoint_every_s and now - self.last_checkpoint >= run.checkpoint_every_s:
                save_checkpoint(algo, run_dir)
                self.last_checkpoint = now
            if run.time_limit_s and now - self.built > run.time_limit_s:
                logger.info("time limit of %.0f s reached at %d env steps", run.time_limit_s, self.env_steps)
                break
        return result

    def summary(self, result: dict, started: float, trained: float) -> dict[str, Any]:
        """training.json's common part: the clock, the training episodes' means, the speed."""
        return {
            "algorithm": self.settings.algorithm,
            "env_steps": self.env_steps,
            "episodes": len(self.episodes),
            **{f"{key}_mean": value for key, value in _means(self.episodes).items()},
            **{f"{key}_last20": value for key, value in _means(self.episodes[-20:]).items()},
            "trained_steps": _num(_get(result, "learners", "__all_modules__", "num_module_steps_trained_lifetime")),
            "iterations": self.iterations,
            "wall_time_s": trained - started,
            "build_time_s": self.built - started,
            "env_steps_per_s": self.env_steps / max(trained - self.built, 1e-9),
        }

    def record(self, result: dict) -> None:
        self.env_steps = int(_get(result, "env_runners", "num_env_steps_sampled_lifetime", default=0) or 0)
        rows = _episode_rows(_get(result, "env_runners", EPISODES_KEY))
        episodes = [
            Episode(
                stream_id=int(r["stream_id"]),
                env_steps=self.env_steps,
                episode_return=r["episode_return"],
                route_completion=r["route_completion"],
                driving_score=r["driving_score"],
            )
            for r in rows
        ]
        self.episodes += episodes
        self.log.episodes(episodes)
        metrics = self.metrics(result, episodes)
        self.log.scalars(metrics, self.env_steps)
        recent = _means(self.episodes[-20:])
        self.log.progress_line(
            f"{self.settings.algorithm}: env steps {self.env_steps}/{self.config.run.total_env_steps} "
            f"({metrics['env_steps_per_s']:.1f}/s) | {len(self.episodes)} episodes, last 20: return "
            f"{_fmt(recent['episode_return'])}, route completion {_fmt(recent['route_completion'])} | "
            f"{time.monotonic() - self.built:.0f} s",
            self.config.run.progress_every_s,
        )

    def metrics(self, result: dict, episodes: list[Episode]) -> dict[str, float]:
        metrics = {
            "env_steps": float(self.env_steps),
            "env_steps_per_s": self.env_steps / max(time.monotonic() - self.built, 1e-9),
            "iteration_s": float(_get(result, "time_this_iter_s", default=0.0) or 0.0),
            "episodes": float(len(self.episodes)),
        }
        means = _means(episodes)
        metrics.update({k: v for k, v in means.items() if v is not None})
        for key in ("episode_return_mean", "episode_len_mean"):
            value = _num(_get(result, "env_runners", key))
            if value is not None:
                metrics[f"rllib/{key}"] = value
        for key, value in (_get(result, "learners", "default_policy", default={}) or {}).items():
            value = _num(value)
            if value is not None:
                metrics[f"learner/{key}"] = value
        trained = _num(_get(result, "learners", "__all_modules__", "num_module_steps_trained_lifetime"))
        if trained is not None:
            metrics["trained_steps"] = trained
        return metrics


def _episode_rows(value) -> list[dict]:
    """The item series as RLlib's result holds it: a list of rows, but the row itself where there was
    one (RLlib 2.60 unwraps a one-item series) and NaN or nothing where there was none."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, (list, tuple)):
        return [row for item in value for row in _episode_rows(item)]
    return []


def save_checkpoint(algo, run_dir: Path) -> Path:
    """RLlib's Algorithm checkpoint in run_dir/checkpoint, replaced whole (never half-written)."""
    target, staging, old = (
        run_dir / CHECKPOINT_DIR,
        run_dir / f"{CHECKPOINT_DIR}.partial",
        run_dir / f"{CHECKPOINT_DIR}.old",
    )
    shutil.rmtree(staging, ignore_errors=True)
    algo.save_to_path(str(staging))
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def _means(episodes: list[Episode]) -> dict[str, float | None]:
    keys = ("episode_return", "route_completion", "driving_score")
    return {k: float(np.mean([getattr(e, k) for e in episodes])) if episodes else None for k in keys}


def _get(result: Any, *path, default=None):
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return default
        result = result[key]
    return result


def _num(value) -> float | None:
    """A finite float, or None where RLlib reported nothing (or something that is not a number)."""
    if isinstance(value, (dict, list, tuple, str)) or value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


# --------------------------------------------------------------------------------------- evaluation


def rl_module_path(checkpoint_dir: str | Path) -> Path:
    """The learner's RLModule inside an Algorithm checkpoint (or a run directory, or the module
    directory itself)."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

    path = Path(checkpoint_dir)
    if (path / CHECKPOINT_DIR).is_dir():
        path = path / CHECKPOINT_DIR
    nested = path / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID
    if nested.is_dir():
        return nested
    if (path / DEFAULT_MODULE_ID).is_dir():
        return path / DEFAULT_MODULE_ID
    if (path / "class_and_ctor_args.pkl").is_file() and any(path.glob("module_state*")):
        return path
    raise FileNotFoundError(
        f"{checkpoint_dir}: no RLlib RLModule checkpoint there (expected {nested}, or a run "
        f"directory with {CHECKPOINT_DIR}/)"
    )


def load_module(checkpoint_dir: str | Path):
    """The trained RLModule of a checkpoint, on the CPU, in eval mode."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    module = RLModule.from_checkpoint(str(rl_module_path(checkpoint_dir)))
    return module.to("cpu").eval()


class ModulePolicy:
    """A trained stateless RLModule (PPO, SAC) on the driving env's {"bev", "state"} observation as
    Mentor's Policy (core.Policy). explore=False takes the action distribution's deterministic
    action (the Gaussian's mean; SAC's tanh of it) from forward_inference, explore=True samples it
    from forward_exploration; either is clipped to the action space [-1, 1] as RLlib's env runner
    does (NormalizeAndClipActions: the identity on [-1, 1], then the clip)."""

    def __init__(self, module):
        self.module = module.eval()

    def initial_carry(self, batch_size: int) -> None:
        return None

    def act(self, carry, obs, is_first: np.ndarray, *, explore: bool, step: int) -> tuple[None, np.ndarray]:
        from ray.rllib.core.columns import Columns

        batch = {
            Columns.OBS: {
                "bev": torch.from_numpy(np.ascontiguousarray(obs["bev"])),
                "state": torch.from_numpy(np.asarray(obs["state"], dtype=np.float32)),
            }
        }
        with torch.no_grad():
            if explore:
                out = self.module.forward_exploration(batch)
                dist = self.module.get_exploration_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
            else:
                out = self.module.forward_inference(batch)
                dist = (
                    self.module.get_inference_action_dist_cls()
                    .from_logits(out[Columns.ACTION_DIST_INPUTS])
                    .to_deterministic()
                )
            actions = dist.sample()
        return carry, np.clip(actions.cpu().numpy().astype(np.float32), -1.0, 1.0)

    def load_weights(self, weights) -> None:
        self.module.load_state_dict(weights)


def evaluate_rllib(config: Config, settings: RllibSettings, checkpoint_dir: str | Path) -> dict[str, dict[str, float]]:
    """Mentor's metric table (per-route rows and "mean") of the checkpoint's policy, driven without
    exploration by workers.evaluation.EvaluationWorker on the evaluation env of `config` (config.eval:
    Town02's nocrash_eval suite where maps exist), exactly as evaluate.py drives Mentor's agents."""
    from workers.assembly import eval_env_config, make_env
    from workers.evaluation import EvaluationWorker

    policy = load_algorithm(settings.algorithm).load_policy(checkpoint_dir)
    env_config = eval_env_config(config)
    ev = config.eval
    logger.info(
        "evaluating %s %s on %s (%s traffic), routes %s",
        settings.algorithm,
        checkpoint_dir,
        env_config.town,
        ev.traffic,
        list(ev.routes),
    )
    evaluator = EvaluationWorker(
        make_env(env_config, rgb_bev=False), policy, ev.routes, ev.max_steps, seed=config.run.seed
    )
    try:
        return evaluator.evaluate()
    finally:
        evaluator.close()


def run_baseline(config: Config, settings: RllibSettings, run_dir: str | Path) -> dict[str, Any]:
    """Train, then evaluate into run_dir/evaluation.json (and learning_curve.png):
    {"training": summary, "evaluation": rows}."""
    run_dir = Path(run_dir)
    training = train_rllib(config, settings, run_dir)
    rows = evaluate_rllib(config, settings, training["checkpoint"])
    (run_dir / "evaluation.json").write_text(json.dumps(rows, indent=1, default=float))
    plot_learning_curve(run_dir)
    return {"training": training, "evaluation": rows}
