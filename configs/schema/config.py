"""The whole configuration: `Config` (one field per section), the fields that moved, and the rules
that span sections (`cross_checks`, run by configs/loader.py after every field passed its own)."""

from __future__ import annotations

from dataclasses import dataclass

from configs.schema.algorithms import AgentConfig, algorithm_names
from configs.schema.env import EnvConfig
from configs.schema.feedback import FeedbackConfig, model_fields
from configs.schema.fields import section
from configs.schema.learner import CollectConfig, DataConfig, EvalConfig, LearnerConfig
from configs.schema.run import RunConfig
from configs.schema.workers import WorkerConfig


@dataclass(frozen=True)
class Config:
    run: RunConfig = section(RunConfig)
    env: EnvConfig = section(EnvConfig)
    feedback: FeedbackConfig = section(FeedbackConfig)
    workers: WorkerConfig = section(WorkerConfig)
    agent: AgentConfig = section(AgentConfig)
    learner: LearnerConfig = section(LearnerConfig)
    data: DataConfig = section(DataConfig)
    collect: CollectConfig = section(CollectConfig)
    eval: EvalConfig = section(EvalConfig)


# Fields that moved, so that an old config or run directory gets told where they went.
MOVED = {
    "run.local": "run.mode (local or ray)",
    **{f"agent.{name}": f"agent.drqv2.{name}" for name in ("std_start", "std_end", "std_steps", "std_clip")},
    "agent.init_temperature": "agent.sac.init_temperature",
    **{
        f"agent.{name}": f"agent.td3.{name}"
        for name in ("policy_noise", "noise_clip", "exploration_noise", "policy_delay")
    },
    "agent.bc_alpha": "agent.guidance.bc_alpha",
}


def cross_checks(config: Config) -> list[str]:
    """Rules that span fields; each broken one is a message naming the fields and the fix."""
    problems = []
    if config.agent.algorithm not in algorithm_names():
        problems.append(
            f"agent.algorithm = {config.agent.algorithm!r} is invalid: must be one of {', '.join(algorithm_names())}"
        )
    if config.run.total_env_steps == 0 and config.run.total_updates == 0:
        problems.append("run.total_env_steps and run.total_updates are both 0: give the run a budget")
    env = config.env
    if env.backend == "carla" and not env.carla.launch and config.workers.num_workers > 1:
        problems.append(
            f"env.carla.launch=false connects every worker to {env.carla.host}:{env.carla.port}, but a "
            f"CARLA world runs one ego per client here; use workers.num_workers=1 or let each worker "
            "launch its own server (env.carla.launch=true)"
        )
    if config.run.mode == "offline" and not config.data.dataset:
        problems.append("run.mode = offline needs a dataset: set data.dataset to a directory written by collect.py")
    if config.run.mode == "offline" and not config.run.total_updates:
        problems.append("run.mode = offline ends on an update count: set run.total_updates")
    if config.collect.policy == "checkpoint" and not config.collect.checkpoint:
        problems.append("collect.policy = checkpoint needs collect.checkpoint (a run or checkpoint directory)")
    g = config.agent.guidance
    if g.vmr_decay_end < g.vmr_hold_steps:
        problems.append(
            f"agent.guidance.vmr_decay_end = {g.vmr_decay_end} is before vmr_hold_steps = "
            f"{g.vmr_hold_steps}; the decay must end after it starts"
        )
    return problems + _feedback_checks(config)


def _feedback_checks(config: Config) -> list[str]:
    problems = []
    f, g, lr = config.feedback, config.agent.guidance, config.learner
    if f.max_pending_age_s >= f.deadline_s:
        problems.append(
            f"feedback.max_pending_age_s = {f.max_pending_age_s} must be below feedback.deadline_s = "
            f"{f.deadline_s}: workers must slow down before their items expire"
        )
    served = model_fields(f.model) if f.mode != "off" else set()
    unserved = set(f.wanted) - served
    if f.mode != "off" and f.model != "none" and unserved:
        problems.append(
            f"feedback.wanted asks for {sorted(unserved)} but feedback.model = {f.model!r} answers "
            f"{sorted(model_fields(f.model)) or 'nothing'}; drop them or pick a model that answers them"
        )
    needs = {
        "vlm_action": g.vmr_weight > 0 or g.awag_weight > 0,
        "clip_margin": lr.clip_reward_scale > 0,
        "safety": lr.semantic_reward_scale > 0,
    }
    for name, needed in needs.items():
        # mode off is a deliberate ablation (throughput baselines): the terms just see mask 0.
        if needed and f.mode != "off" and (name not in f.wanted or name not in served):
            user = {
                "vlm_action": "agent.guidance (VMR/AWAG)",
                "clip_margin": "learner.clip_reward_scale",
                "safety": "learner.semantic_reward_scale",
            }[name]
            problems.append(
                f"{user} needs the {name} feedback: add {name} to feedback.wanted, and use a "
                f"feedback.model that answers it"
            )
    # semantic_score is what the DriveVLM-RL reward is made of (workers/row_reward.py): the model that
    # answers it runs a CLIP and a VLM for nothing unless the workers ask for it.
    if "drivevlm" in f.model.split("+") and f.mode != "off" and "semantic_score" not in f.wanted:
        problems.append(
            f"feedback.model = {f.model!r} answers semantic_score only (the DriveVLM-RL reward): "
            "add semantic_score to feedback.wanted"
        )
    d = f.drivevlm
    if d.hi <= d.lo:
        problems.append(
            f"feedback.drivevlm.hi = {d.hi} must exceed feedback.drivevlm.lo = {d.lo}: "
            "the score is normalised by hi - lo"
        )
    if "drivevlm" in f.model.split("+") and f.vlm.max_images_per_prompt < d.history_frames + 1:
        problems.append(
            f"feedback.vlm.max_images_per_prompt = {f.vlm.max_images_per_prompt} cannot take the "
            f"dynamic pathway's windows of feedback.drivevlm.history_frames + 1 = {d.history_frames + 1} "
            "frames: raise it"
        )
    return problems
