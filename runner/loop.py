"""The training loop, in the order a run goes: step the runtime until its budget is spent
(checkpointing on the way), stop collecting, checkpoint, evaluate."""
from __future__ import annotations

import logging
import time

from configs.schema import Config
from core import Runtime, StepReport
from runner.checkpoint import write_checkpoint
from runner.run_dir import RunLog, plot_learning_curve

logger = logging.getLogger(__name__)


def train(config: Config, log: RunLog, runtime: Runtime) -> dict:
    """Collect and learn until run.total_env_steps (or run.total_updates), then the evaluation table."""
    started = time.monotonic()
    last_checkpoint = runtime.updates
    while not runtime.done():
        record(log, runtime.step(), runtime, config, started)
        if runtime.updates - last_checkpoint >= config.learner.checkpoint_every_updates:
            write_checkpoint(log.dir, runtime)
            last_checkpoint = runtime.updates
        if config.run.time_limit_s and time.monotonic() - started > config.run.time_limit_s:
            logger.info("time limit of %.0f s reached at %d env steps", config.run.time_limit_s, runtime.env_steps)
            break
    record(log, runtime.finish(), runtime, config, started)  # every worker's last rows and episodes
    write_checkpoint(log.dir, runtime)
    rows = runtime.evaluate()
    log.write_json("evaluation.json", rows)
    curve = plot_learning_curve(log.dir)
    logger.info("run directory: %s%s", log.dir, f" (learning curve: {curve.name})" if curve else "")
    return rows


def record(log: RunLog, report: StepReport, runtime: Runtime, config: Config, started: float) -> None:
    log.scalars(report.metrics, runtime.env_steps)
    log.episodes(report.episodes)
    log.progress_line(progress_text(report.metrics, config, started), config.run.progress_every_s)


def progress_text(m: dict[str, float], config: Config, started: float) -> str:
    elapsed = max(time.monotonic() - started, 1e-6)
    budget = (f"env steps {m['env_steps']:.0f}/{config.run.total_env_steps}" if config.run.total_env_steps
              else f"env steps {m['env_steps']:.0f}")
    updates = (f"updates {m['learner_updates']:.0f}/{config.run.total_updates}" if config.run.total_updates
               else f"updates {m['learner_updates']:.0f}")
    return (f"{budget} ({m.get('env_steps_per_s', 0.0):.0f}/s) | {updates} ({m['updates_per_s']:.1f}/s, "
            f"ratio {m['samples_per_insert']:.1f}) | replay {m['replay_size']:.0f} | policy "
            f"v{m['policy_version']:.0f} lag {m['policy_lag']:.1f} | feedback avail "
            f"{m.get('feedback/availability', 1.0):.3f} pending {m.get('feedback/pending', 0):.0f} | "
            f"return(ep) {m.get('episode_return', float('nan')):.1f} | {elapsed:.0f} s")
