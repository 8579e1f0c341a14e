"""The typed experiment configuration: frozen dataclasses, validated on load.

A run is described by one YAML file (see configs/*.yaml) plus `key=value` overrides with dotted
paths (`learner.batch_size=128`). Anything invalid stops the run at start with the field's full
path and what is allowed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ALGORITHMS = ("drqv2", "sac", "td3")
NETWORK_PRESETS = ("small", "foundrl")
FEEDBACK_MODELS = ("none", "expert", "slow", "faulty", "clip", "vlm", "expert+clip", "vlm+clip")
FEEDBACK_MODES = ("off", "async", "sync")
TRAFFIC_PRESETS = ("empty", "regular", "dense")


@dataclass(frozen=True)
class CarlaConfig:
    """The CARLA backend (env.backend: carla): a server per rollout actor, or one already running."""

    launch: bool = True  # each rollout actor starts and supervises its own server (cluster/carla_server.py)
    host: str = "127.0.0.1"
    port: int = 2000  # rpc port; with launch, the preferred one (0: any free port)
    tm_port: int = 8000  # traffic manager port when connecting to a running server (launched: rpc + 6000)
    carla_root: str | None = None  # directory of CarlaUE4.sh; None: $CARLA_ROOT, then the usual places
    executable: str | None = None  # the server script itself; wins over carla_root
    gpu_index: int | None = None  # Vulkan adapter for -graphicsadapter; None: the default GPU
    nullrhi: bool = True  # no rendering at all: the BEV needs none (set false for camera sensors)
    quality_level: Literal["Low", "Epic"] = "Low"
    ready_timeout_s: float = 120.0
    tick_timeout_s: float = 20.0
    restart_every_s: float = 0.0  # periodic restarts against CARLA's memory growth (0: never)
    client_timeout_s: float = 20.0
    log_dir: str = "runs/carla-logs"


@dataclass(frozen=True)
class EnvConfig:
    town: str | None = None  # None: Town01 where its map is found, else the generated town
    traffic: Literal["empty", "regular", "dense"] = "regular"
    route_suite: str | None = None  # None: the town's own suite
    maps_dir: str | None = None
    backend: Literal["sumo", "carla"] = "sumo"  # the embedded SUMO simulator, or CARLA servers
    carla: CarlaConfig = field(default_factory=CarlaConfig)


# VL-SAFE-style goals for the CLIP safety probability (BEV wording: the images are bird's-eye views).
SAFE_PROMPTS = (
    "A bird's-eye view of a car driving safely in its lane with free road ahead.",
    "A bird's-eye view of a car keeping a safe distance from other vehicles and pedestrians.",
)
UNSAFE_PROMPTS = (
    "A bird's-eye view of a car about to collide with another vehicle.",
    "A bird's-eye view of a car about to hit a pedestrian.",
    "A bird's-eye view of a car driving off the road.",
)


@dataclass(frozen=True)
class ClipConfig:
    """Which open_clip model answers clip_margin and safety (see inference/clip_model.py)."""

    arch: str = "MentorCLIP-Tiny"
    pretrained: str | None = None  # an open_clip tag of `arch` (laion2b_s34b_b88k) or a weights file
    # The checkpoint `python -m inference.clip_training` writes by default; wins over arch/pretrained.
    checkpoint: str | None = "artifacts/clip/mentor-clip-tiny"
    safe_prompts: tuple[str, ...] = SAFE_PROMPTS
    unsafe_prompts: tuple[str, ...] = UNSAFE_PROMPTS
    device: str = "auto"  # auto: cuda when the replica has a GPU


@dataclass(frozen=True)
class VlmConfig:
    """The VLM advisor on vLLM (inference/vlm_advisor.py)."""

    model: str = "OpenGVLab/InternVL3-1B"  # a hub id (in the HF cache) or a local path
    max_tokens: int = 64
    temperature: float = 0.0
    max_model_len: int = 4096
    gpu_memory_utilization: float = 0.5
    # vLLM pins its own torch: the deployment gets its own runtime_env with these packages.
    pip: tuple[str, ...] = ("vllm==0.33.0",)


@dataclass(frozen=True)
class FeedbackConfig:
    model: Literal["none", "expert", "slow", "faulty", "clip", "vlm", "expert+clip", "vlm+clip"] = "expert"
    mode: Literal["off", "async", "sync"] = "async"
    wanted: tuple[str, ...] = ("vlm_action",)  # feedback fields each step asks for
    bundle_steps: int = 32  # a worker sends its items once per this many steps (a handle call costs ~4 ms CPU)
    max_batch_size: int = 64  # items per model call (Serve @serve.batch)
    batch_wait_timeout_s: float = 0.01
    max_concurrent_batches: int = 1
    replicas: int = 1
    replica_cpus: int = 1  # per replica; also its torch threads (Ray sets OMP_NUM_THREADS from it)
    gpu_fraction: float = 0.0  # per replica, when the cluster has GPUs
    deadline_s: float = 5.0  # an item unanswered this long is shipped with mask 0
    max_pending: int = 512  # backpressure: a worker waits when more items are unanswered
    # ... or when its oldest pending item is this old. Below deadline_s, so that a model slower than the
    # rollouts slows the workers down to its pace instead of letting items expire unanswered.
    max_pending_age_s: float = 2.5
    slow_model_delay_s: float = 0.05  # per batch, for the deliberately slow model
    faulty_model_error_rate: float = 0.2  # for the deliberately faulty model
    clip: ClipConfig = field(default_factory=ClipConfig)
    vlm: VlmConfig = field(default_factory=VlmConfig)


@dataclass(frozen=True)
class WorkerConfig:
    num_workers: int = 2  # one environment each: libsumo runs one simulation per process
    chunk_size: int = 64  # transitions shipped to the learner per call
    pull_weights_every_steps: int = 200
    random_steps: int = 1000  # uniform random actions before the policy acts (per worker)
    # A custom resource each rollout actor asks for one unit of (e.g. "carla_server", declared per node
    # in ray_cluster.yaml as the number of CARLA servers it can host): the scheduler then spreads them.
    server_resource: str | None = None
    # A worker slot whose actors fail this many times in a row without a report stops the run.
    max_failures_in_a_row: int = 5


@dataclass(frozen=True)
class GuidanceConfig:
    """VMR (critic) and AWAG (actor) weights; 0 disables. Schedules follow DESIGN §6."""

    vmr_weight: float = 0.0
    vmr_delta: float = 2.0
    vmr_hold_steps: int = 50_000
    vmr_decay_end: int = 150_000
    vmr_schedule: Literal["constant", "linear", "cosine"] = "linear"  # the decay after vmr_hold_steps
    awag_weight: float = 0.0
    awag_decay_steps: int = 300_000
    awag_power: float = 0.7
    awag_schedule: Literal["constant", "linear", "cosine"] = "cosine"
    awag_temperature: float = 2.0
    awag_max_weight: float = 20.0


@dataclass(frozen=True)
class AgentConfig:
    algorithm: Literal["drqv2", "sac", "td3"] = "drqv2"
    network: Literal["small", "foundrl"] = "small"
    lr: float = 1e-4
    gamma: float = 0.99
    tau: float = 0.005
    n_step: int = 3
    # DrQ-v2 exploration: std linear from std_start to std_end over std_steps; clipped noise.
    std_start: float = 1.0
    std_end: float = 0.1
    std_steps: int = 100_000
    std_clip: float = 0.3
    augment_pad: int = 4  # random shift in pixels (DrQ-v2); 0 disables
    # SAC
    init_temperature: float = 0.1
    # TD3
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    exploration_noise: float = 0.1
    policy_delay: int = 2
    bc_alpha: float = 2.5  # the base actor loss is scaled by alpha / mean|Q| (AWAG, DESIGN §6)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)


@dataclass(frozen=True)
class LearnerConfig:
    batch_size: int = 256
    replay_capacity: int = 150_000
    learning_starts: int = 1024
    samples_per_insert: float = 32.0  # bound on (batch_size * updates) / inserted transitions
    publish_every_updates: int = 20
    checkpoint_every_updates: int = 1000
    device: str = "auto"  # auto: cuda when available
    gpu_fraction: float = 1.0  # of one GPU; below 1 lets GPU feedback replicas share the learner's GPU
    # Sample-time reward shaping (DESIGN §5): r + clip_reward_scale * normalised CLIP margin bonus
    # (Found-RL uses 0.25) + semantic_reward_scale * (2 * safety - 1) (VLM-RL-style language goals).
    clip_reward_scale: float = 0.0
    semantic_reward_scale: float = 0.0


@dataclass(frozen=True)
class EvalConfig:
    route_suite: str | None = None  # None: nocrash_eval on Town02 where maps exist, else generated
    town: str | None = None
    routes: tuple[int, ...] = (0, 1, 2)
    traffic: Literal["empty", "regular", "dense"] = "regular"
    max_steps: int = 3000


@dataclass(frozen=True)
class RunConfig:
    name: str = "quickstart"
    total_env_steps: int = 20_000
    seed: int = 0
    runs_dir: str = "runs"
    progress_every_s: float = 5.0
    local: bool = False  # single process, no Ray (the same classes)
    ray_address: str | None = None  # None: join a running cluster (ray job submit) or start one
    shutdown_ray: bool = True  # disconnect from Ray at the end (tests that share a cluster say no)
    time_limit_s: float = 0.0  # stop after this long (0: no limit)


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    workers: WorkerConfig = field(default_factory=WorkerConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Range checks beyond the types: field path -> (predicate, what is allowed).
CHECKS = {
    "run.total_env_steps": (lambda v: v > 0, "a positive integer"),
    "env.carla.port": (lambda v: 0 <= v <= 65535, "a port number, or 0 for any free port"),
    "env.carla.tm_port": (lambda v: 0 < v <= 65535, "a port number"),
    "env.carla.ready_timeout_s": (lambda v: v > 0, "a positive number of seconds"),
    "env.carla.tick_timeout_s": (lambda v: v > 0, "a positive number of seconds"),
    "env.carla.client_timeout_s": (lambda v: v > 0, "a positive number of seconds"),
    "env.carla.restart_every_s": (lambda v: v >= 0, "seconds >= 0 (0: never)"),
    "workers.max_failures_in_a_row": (lambda v: v >= 1, "an integer >= 1"),
    "feedback.max_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "feedback.max_concurrent_batches": (lambda v: v >= 1, "an integer >= 1"),
    "feedback.replicas": (lambda v: v >= 1, "an integer >= 1"),
    "feedback.replica_cpus": (lambda v: v >= 1, "an integer >= 1"),
    "feedback.gpu_fraction": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "feedback.deadline_s": (lambda v: v > 0, "a positive number of seconds"),
    "feedback.max_pending_age_s": (lambda v: v > 0, "a positive number of seconds"),
    "feedback.max_pending": (lambda v: v >= 1, "an integer >= 1"),
    "feedback.wanted": (lambda v: set(v) <= {"vlm_action", "clip_margin", "safety"},
                        "a list drawn from vlm_action, clip_margin, safety"),
    "workers.num_workers": (lambda v: v >= 1, "an integer >= 1"),
    "feedback.bundle_steps": (lambda v: v >= 1, "an integer >= 1"),
    "workers.chunk_size": (lambda v: v >= 1, "an integer >= 1"),
    "agent.lr": (lambda v: v > 0, "a positive number"),
    "agent.gamma": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "agent.tau": (lambda v: 0.0 < v <= 1.0, "a number in (0, 1]"),
    "agent.n_step": (lambda v: v >= 1, "an integer >= 1"),
    "learner.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "learner.replay_capacity": (lambda v: v >= 16, "an integer >= 16"),
    "learner.samples_per_insert": (lambda v: v > 0, "a positive number"),
    "learner.clip_reward_scale": (lambda v: v >= 0, "a number >= 0"),
    "learner.gpu_fraction": (lambda v: 0.0 < v <= 1.0, "a number in (0, 1]"),
    "learner.semantic_reward_scale": (lambda v: v >= 0, "a number >= 0"),
    "feedback.clip.safe_prompts": (lambda v: len(v) >= 1, "a non-empty list of prompts"),
    "feedback.clip.unsafe_prompts": (lambda v: len(v) >= 1, "a non-empty list of prompts"),
    "feedback.vlm.max_tokens": (lambda v: v >= 8, "an integer >= 8 (the JSON answer needs room)"),
}

_MODEL_FIELDS = {"expert": {"vlm_action"}, "slow": {"vlm_action"}, "faulty": {"vlm_action"},
                 "vlm": {"vlm_action"}, "clip": {"clip_margin", "safety"}}


def model_fields(model: str) -> set[str]:
    """The feedback fields a `feedback.model` can answer ("expert+clip" answers both sets)."""
    return set().union(*(_MODEL_FIELDS.get(part, set()) for part in model.split("+")))


def cross_checks(config: Config) -> list[str]:
    """Rules that span fields; each broken one is a message naming the fields and the fix."""
    problems = []
    env = config.env
    if env.backend == "carla" and not env.carla.launch and config.workers.num_workers > 1:
        problems.append(f"env.carla.launch=false connects every worker to {env.carla.host}:{env.carla.port}, but a "
                        f"CARLA world runs one ego per client here; use workers.num_workers=1 or let each worker "
                        "launch its own server (env.carla.launch=true)")
    f, g, lr = config.feedback, config.agent.guidance, config.learner
    served = model_fields(f.model) if f.mode != "off" else set()
    unserved = set(f.wanted) - served
    if f.mode != "off" and f.model != "none" and unserved:
        problems.append(f"feedback.wanted asks for {sorted(unserved)} but feedback.model = {f.model!r} answers "
                        f"{sorted(model_fields(f.model)) or 'nothing'}; drop them or pick a model that answers them")
    needs = {"vlm_action": g.vmr_weight > 0 or g.awag_weight > 0,
             "clip_margin": lr.clip_reward_scale > 0, "safety": lr.semantic_reward_scale > 0}
    for name, needed in needs.items():
        # mode off is a deliberate ablation (throughput baselines): the terms just see mask 0.
        if needed and f.mode != "off" and (name not in f.wanted or name not in served):
            user = {"vlm_action": "agent.guidance (VMR/AWAG)", "clip_margin": "learner.clip_reward_scale",
                    "safety": "learner.semantic_reward_scale"}[name]
            problems.append(f"{user} needs the {name} feedback: add {name} to feedback.wanted, and use a "
                            f"feedback.model that answers it")
    return problems
