"""The typed experiment configuration: frozen dataclasses, validated on load.

A run is described by YAML files (configs/*.yaml, overlays such as configs/debug.yaml) plus
`key=value` overrides with dotted paths (`learner.batch_size=128`). Every numeric field declares
its unit and its allowed range (`num`); anything invalid stops the run at start with the field's
full path and what is allowed.

The algorithms are the sections of `AgentConfig`: a section's dataclass names the module that
implements it (`implementation`), and `agent.algorithm` picks one by its field name. Adding an
algorithm adds its files and one section line there (learners/registry.py resolves it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

NETWORK_PRESETS = ("small", "foundrl")
FEEDBACK_MODES = ("off", "async", "sync")
TRAFFIC_PRESETS = ("empty", "regular", "dense")
FEEDBACK_FIELDS = ("vlm_action", "clip_margin", "safety", "semantic_score")


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric field: [low, high], either end open or absent."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self, kind: str) -> str:
        if self.low is not None and self.high is not None:
            return (
                f"{kind} in {'(' if self.low_open else '['}{_num(self.low)}, "
                f"{_num(self.high)}{')' if self.high_open else ']'}"
            )
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {_num(self.high)}"
        return kind


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def num(
    default: float | int | None,
    low: float | None = None,
    high: float | None = None,
    *,
    unit: str,
    low_open: bool = False,
    high_open: bool = False,
):
    """A numeric field with its unit and allowed range (checked by configs/loader.py)."""
    return field(default=default, metadata={"range": Range(low, high, low_open, high_open), "unit": unit})


def check(default: Any, predicate: Callable[[Any], bool], allowed: str, factory: bool = False):
    """A non-numeric field with a rule beyond its type."""
    meta = {"check": (predicate, allowed)}
    return field(default_factory=default, metadata=meta) if factory else field(default=default, metadata=meta)


def section(cls):
    return field(default_factory=cls)


# ------------------------------------------------------------------------------------------ environment


@dataclass(frozen=True)
class CarlaConfig:
    """The CARLA backend (env.backend: carla): a server per rollout actor, or one already running."""

    launch: bool = True  # each rollout actor starts and supervises its own server (envs/carla/server.py)
    host: str = "127.0.0.1"
    port: int = num(2000, 0, 65535, unit="port")  # rpc port; with launch, the preferred one (0: any free)
    tm_port: int = num(8000, 1, 65535, unit="port")  # traffic manager port of a running server (launched: rpc+6000)
    carla_root: str | None = None  # directory of CarlaUE4.sh; None: $CARLA_ROOT, then the usual places
    executable: str | None = None  # the server script itself; wins over carla_root
    gpu_index: int | None = num(None, 0, unit="GPU index")  # Vulkan adapter (-graphicsadapter); None: default
    nullrhi: bool = True  # no rendering at all: the BEV needs none (set false for camera sensors)
    quality_level: Literal["Low", "Epic"] = "Low"
    ready_timeout_s: float = num(120.0, 0, unit="s", low_open=True)  # launch until the server answers
    tick_timeout_s: float = num(20.0, 0, unit="s", low_open=True)  # a tick longer than this: server lost
    restart_every_s: float = num(0.0, 0, unit="s")  # periodic restarts against memory growth (0: never)
    client_timeout_s: float = num(20.0, 0, unit="s", low_open=True)
    log_dir: str = "runs/carla-logs"


@dataclass(frozen=True)
class EnvConfig:
    town: str | None = None  # None: Town01 where its map is found, else the generated town
    traffic: Literal["empty", "regular", "dense"] = "regular"
    route_suite: str | None = None  # None: the town's own suite
    maps_dir: str | None = None  # None: $MENTOR_MAPS_DIR, $CARLA_ROOT, then the generated town
    backend: Literal["sumo", "carla"] = "sumo"  # the embedded SUMO simulator, or CARLA servers
    carla: CarlaConfig = section(CarlaConfig)


# ------------------------------------------------------------------------------------------- feedback

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
    safe_prompts: tuple[str, ...] = check(SAFE_PROMPTS, lambda v: len(v) >= 1, "a non-empty list of prompts")
    unsafe_prompts: tuple[str, ...] = check(UNSAFE_PROMPTS, lambda v: len(v) >= 1, "a non-empty list of prompts")
    device: str = "auto"  # auto: cuda when the replica has a GPU


@dataclass(frozen=True)
class VlmConfig:
    """The VLM advisor on vLLM (inference/vlm_advisor.py)."""

    # A local path (a model inference/vlm_finetune.py wrote, or a downloaded checkpoint) or a hub id
    # that is in the Hugging Face cache.
    model: str = "OpenGVLab/InternVL3-1B"
    max_tokens: int = num(32, 8, unit="tokens")  # generated per answer (Found-RL: 32); the JSON needs ~20
    temperature: float = num(0.0, 0, unit="1")  # sampling temperature (0: greedy)
    max_model_len: int = num(4096, 256, unit="tokens")  # vLLM context length
    max_images_per_prompt: int = num(4, 1, unit="images")  # vLLM's limit; DriveVLM-RL windows need K + 1
    dtype: str = "auto"  # vLLM dtype: auto (the checkpoint's), float32, bfloat16, float16
    enforce_eager: bool = False  # skip torch.compile and graphs (starts ~40 s faster on a CPU, runs slower)
    gpu_memory_utilization: float = num(0.5, 0, 1, unit="fraction", low_open=True)  # of the replica's GPU
    cpu_kv_cache_gib: float = num(1.0, 0, unit="GiB", low_open=True)  # KV cache on a CPU (vLLM takes ~all RAM else)
    cpu_bind_threads: bool = False  # pin vLLM's OpenMP threads to cores (on a CPU shared with simulators: no)
    # Packages of the deployment's own Ray runtime_env (a GPU cluster: vLLM pins its own torch). Empty:
    # none, the run's environment already has vLLM (a CPU: scripts/bootstrap_vlm.sh's environment).
    pip: tuple[str, ...] = ("vllm==0.33.0",)
    # Run Python code shipped with the model (InternVL3 needs it; Qwen2.5-VL does not): opt in only
    # for a model whose code you have read or trust.
    trust_remote_code: bool = False


@dataclass(frozen=True)
class DriveVlmConfig:
    """DriveVLM-RL's reward (feedback.model: drivevlm; docs/drivevlm.md). The feedback model answers
    semantic_score = R_static + R_dyn (inference/drivevlm_feedback.py); the rollout worker turns it into
    the row's reward (envs/semantic_reward.py): R_norm = (clip(score, lo, hi) - lo) / (hi - lo),
    v_des = R_norm v_max, reward = (1 - |v - v_des| / v_max) f_center f_angle f_stability, or `penalty`
    when a failure ends the episode. Defaults: VLM-RL's published code (github zihaosheng/VLM-RL,
    config.py reward_fn_5_default, clip/clip_rewarded_sac.py) where DriveVLM-RL's are not published."""

    # The language goals (DriveVLM-RL's project page; the static pair is also VLM-RL's reward_clg).
    static_positive: str = "The road is clear with no car accidents"
    static_negative: str = "Two cars have collided with each other on the road"
    dynamic_positive: str = "The road ahead is clear with no obstacles"
    alpha: float = num(1.0, 0, unit="reward/cosine")  # weight of sim(image, positive goal)
    beta: float = num(1.0, 0, unit="reward/cosine")  # weight of sim(image, negative goal or l_dyn)
    # The score's clipping range: VLM-RL clips sim(neg) - sim(pos) to [0, 0.03]; in DriveVLM-RL's sign
    # (alpha sim(pos) - beta sim(neg), alpha = beta = 1) that is [-0.03, 0].
    lo: float = num(-0.03, unit="cosine")
    hi: float = num(0.0, unit="cosine")  # must exceed lo
    v_max: float = num(25.0 / 3.6, 0, unit="m/s", low_open=True)  # VLM-RL's target_speed, 25 km/h
    penalty: float = num(-10.0, unit="reward")  # VLM-RL's penalty_reward, on a failure that ends the episode
    max_center_distance: float = num(3.0, 0, unit="m", low_open=True)  # f_center reaches 0 here (VLM-RL: 3)
    max_angle: float = num(90.0, 0, 180, unit="deg", low_open=True)  # f_angle reaches 0 here (VLM-RL: 90)
    max_center_std: float = num(0.4, 0, unit="m", low_open=True)  # f_stability reaches 0 here (VLM-RL: 0.4)
    # The std of this many latest distances from the centreline, this episode (VLM-RL: a deque of 30).
    stability_window: int = num(30, 1, unit="env steps")
    # K: the VLM reads the last K + 1 RGB BEVs (oldest first) of a gated step (not published; 2 here,
    # as inference/vlm_finetune.py's --frames 3 teaches the small VLM).
    history_frames: int = num(2, 0, unit="frames")
    # The gate (envs/attention_gate.py): a walker whose nearest point of the route ahead is at most
    # gate_ahead along it and at most gate_lateral from it (the BEV shows 30.4 m ahead, 19.2 m aside;
    # the worker passes the next 60 m of the route). Mentor's choice: DriveVLM-RL gates on a detection.
    gate_ahead: float = num(25.0, 0, 60, unit="m", low_open=True)
    gate_lateral: float = num(4.0, 0, unit="m", low_open=True)


@dataclass(frozen=True)
class FeedbackConfig:
    model: Literal["none", "expert", "slow", "faulty", "clip", "vlm", "expert+clip", "vlm+clip", "drivevlm"] = "expert"
    mode: Literal["off", "async", "sync"] = "async"
    wanted: tuple[str, ...] = check(
        ("vlm_action",), lambda v: set(v) <= set(FEEDBACK_FIELDS), "a list drawn from " + ", ".join(FEEDBACK_FIELDS)
    )  # fields each step asks for
    bundle_steps: int = num(32, 1, unit="env steps")  # a worker sends its items once per this many steps
    max_batch_size: int = num(64, 1, unit="items")  # items per model call (Serve @serve.batch)
    batch_wait_timeout_s: float = num(0.01, 0, unit="s")  # how long a batch waits to fill
    max_concurrent_batches: int = num(1, 1, unit="batches")  # per replica
    replicas: int = num(1, 1, unit="replicas")
    replica_cpus: int = num(1, 1, unit="CPUs")  # per replica; also its torch threads (OMP_NUM_THREADS)
    gpu_fraction: float = num(0.0, 0, 1, unit="GPU")  # per replica, when the cluster has GPUs
    # Unanswered this long: shipped with mask 0 (and the model skips it if it has not started on it).
    deadline_s: float = num(5.0, 0, unit="s", low_open=True)
    max_pending: int = num(512, 1, unit="items")  # backpressure: the most unanswered items a worker holds
    # ... and the age its oldest may reach. Each worker's window of unanswered items adapts (between one
    # bundle and max_pending) so that answers come back within half of this: a model slower than the
    # rollouts slows the workers down to its pace instead of letting items expire unanswered.
    max_pending_age_s: float = num(2.5, 0, unit="s", low_open=True)
    slow_model_delay_s: float = num(0.05, 0, unit="s")  # per batch, for the deliberately slow model
    faulty_model_error_rate: float = num(0.2, 0, 1, unit="fraction")  # for the deliberately faulty model
    clip: ClipConfig = section(ClipConfig)
    vlm: VlmConfig = section(VlmConfig)
    drivevlm: DriveVlmConfig = section(DriveVlmConfig)


# -------------------------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class WorkerConfig:
    num_workers: int = num(2, 1, unit="workers")  # one environment each (run.mode=local: all in one process, in turn)
    chunk_size: int = num(64, 1, unit="rows")  # rows shipped to the learner per call
    pull_weights_every_steps: int = num(200, 1, unit="env steps")  # a worker's own steps between pulls
    random_steps: int = num(1000, 0, unit="env steps")  # uniform random actions until the GLOBAL clock passes this
    # A custom resource each rollout actor asks for one unit of (e.g. "carla_server", declared per node
    # in ray_cluster.yaml as the number of CARLA servers it can host): the scheduler then spreads them.
    server_resource: str | None = None
    # A worker slot whose actors fail this many times in a row without a report stops the run.
    max_failures_in_a_row: int = num(5, 1, unit="failures")
    # Store the privileged expert's action at every step (expert_action, a label for BC and datasets).
    record_expert_action: bool = True


# ------------------------------------------------------------------------------------------ algorithms


@dataclass(frozen=True)
class DrQv2Config:
    """DrQ-v2 (Yarats et al. 2021): a deterministic actor explored with a scheduled clipped Gaussian."""

    implementation: ClassVar[str] = "learners.actor_critic.drqv2"
    std_start: float = num(1.0, 0, unit="action units", low_open=True)  # exploration std at env step 0
    std_end: float = num(0.1, 0, unit="action units", low_open=True)  # ... reached at std_steps
    std_steps: int = num(100_000, 1, unit="env steps")  # linear schedule length (global clock)
    std_clip: float = num(0.3, 0, unit="action units", low_open=True)  # target-policy noise clip


@dataclass(frozen=True)
class SacConfig:
    """SAC (Haarnoja et al. 2018): tanh-Gaussian actor and a learned temperature."""

    implementation: ClassVar[str] = "learners.actor_critic.sac"
    init_temperature: float = num(0.1, 0, unit="1", low_open=True)  # initial alpha


@dataclass(frozen=True)
class Td3Config:
    """TD3 (Fujimoto et al. 2018): target smoothing, delayed actor, Gaussian exploration."""

    implementation: ClassVar[str] = "learners.actor_critic.td3"
    policy_noise: float = num(0.2, 0, unit="action units")  # target smoothing noise std
    noise_clip: float = num(0.5, 0, unit="action units")  # ... clipped to +-noise_clip
    exploration_noise: float = num(0.1, 0, unit="action units")  # acting noise std
    policy_delay: int = num(2, 1, unit="critic updates")  # actor and targets update every this many


@dataclass(frozen=True)
class BcConfig:
    """Behaviour cloning: encoder and deterministic actor regressed to the imitation target (the
    expert's action where a row has one, else the executed action). Offline baseline; no critic."""

    implementation: ClassVar[str] = "learners.actor_critic.bc"
    exploration_noise: float = num(0.1, 0, unit="action units")  # acting noise std when it collects


@dataclass(frozen=True)
class Td3BcConfig(Td3Config):
    """TD3+BC (Fujimoto & Gu 2021): TD3 whose actor also regresses to the imitation target."""

    implementation: ClassVar[str] = "learners.actor_critic.td3bc"
    alpha: float = num(2.5, 0, unit="1", low_open=True)  # Q term weight: alpha / mean |Q|


@dataclass(frozen=True)
class IqlConfig:
    """IQL (Kostrikov et al. 2022): expectile value, Q to r + gamma V(s'), advantage-weighted actor."""

    implementation: ClassVar[str] = "learners.actor_critic.iql"
    expectile: float = num(0.7, 0, 1, unit="1", low_open=True, high_open=True)  # tau of the value loss
    temperature: float = num(3.0, 0, unit="1/return units", low_open=True)  # beta in exp(beta * A)
    exploration_noise: float = num(0.1, 0, unit="action units")  # acting noise std when fine-tuned online


WORLD_MODEL_PRESETS = ("debug", "S", "M", "L")


@dataclass(frozen=True)
class VlSafeConfig:
    """VL-SAFE (Qu et al. 2025): a DreamerV3-style world model with reward, cost, continue and safety
    heads, and a reward and a cost critic that train the policy in imagination; the policy moves toward
    w(s, a) pi_b(a|s), w = p(s) exp(beta1 A_r) + (1 - p(s)) exp(-beta2 A_c), p the predicted safety
    (learners/world_model, docs/world_model.md). The batch is learner.batch_size sequences."""

    implementation: ClassVar[str] = "learners.world_model.agent"
    preset: Literal["debug", "S", "M", "L"] = "debug"  # sizes: learners/world_model/presets.py
    sequence_length: int = num(32, 2, unit="env steps")  # replayed sequence length (DreamerV3: 64)
    horizon: int = num(15, 1, unit="env steps")  # imagination horizon (DreamerV3: 15)
    return_lambda: float = num(0.95, 0, 1, unit="1")  # lambda of the lambda-returns (DreamerV3: 0.95)
    model_lr: float = num(1e-4, 0, unit="1/update", low_open=True)  # world model Adam step (DreamerV3: 1e-4)
    actor_lr: float = num(3e-5, 0, unit="1/update", low_open=True)  # (DreamerV3: 3e-5)
    critic_lr: float = num(3e-5, 0, unit="1/update", low_open=True)  # both critics (DreamerV3: 3e-5)
    grad_clip: float = num(1000.0, 0, unit="gradient norm", low_open=True)  # world model (DreamerV3: 1000)
    free_bits: float = num(1.0, 0, unit="nats")  # KL below this is not penalised (DreamerV3: 1)
    kl_dynamics: float = num(0.5, 0, unit="1")  # dynamics loss scale (DreamerV3: 0.5)
    kl_representation: float = num(0.1, 0, unit="1")  # representation loss scale (DreamerV3: 0.1)
    image_scale: float = num(1.0, 0, unit="1")  # BEV reconstruction loss scale
    safety_scale: float = num(1.0, 0, unit="1")  # safety head loss scale (on labelled rows only)
    entropy: float = num(3e-4, 0, unit="1")  # actor entropy bonus (DreamerV3: 3e-4)
    critic_ema: float = num(0.02, 0, 1, unit="1/update", low_open=True)  # slow critic update rate (DreamerV3: 0.02)
    slow_critic_regulariser: float = num(1.0, 0, unit="1")  # pull toward the slow critic (DreamerV3: 1)
    return_norm_decay: float = num(0.99, 0, 1, unit="1/update")  # EMA of the return percentiles (DreamerV3: 0.99)
    # The policy objective: vlsafe (the safety-weighted mixture above), none (the same weighted
    # likelihood with p = 1: the plain reward-weighted twin), lagrangian (SafeDreamer's augmented
    # Lagrangian on the cost lambda-returns: w = exp(beta1 (A_r - Psi' A_c))).
    safety_weighting: Literal["vlsafe", "none", "lagrangian"] = "vlsafe"
    beta1: float = num(1.0, 0, unit="1/advantage", low_open=True)  # reward advantage temperature (not published)
    beta2: float = num(1.0, 0, unit="1/advantage", low_open=True)  # cost advantage temperature (not published)
    weight_clip: float = num(20.0, 1, unit="1")  # w clipped to [0, weight_clip] (not published)
    # The weighted likelihood of the replayed actions (pi_b is the data's behaviour policy) on replayed
    # states, beside the imagined ones; 0 trains the actor in imagination only.
    behaviour_weight: float = num(1.0, 0, unit="1")
    # SafeDreamer's d, against the start states' cost lambda-return (discounted by agent.gamma and
    # bootstrapped by the cost critic: about the discounted cost of the next 1 / (1 - gamma) steps).
    cost_limit: float = num(2.0, 0, unit="discounted cost")
    lagrange_init: float = num(1e-6, 0, unit="1")  # SafeDreamer's initial multiplier
    penalty_init: float = num(5e-9, 0, unit="1", low_open=True)  # SafeDreamer's initial c ...
    # ... c <- min(1, c (1 + growth)) per update (the rate is not published: 1e-3 reaches 1 in ~19k updates)
    penalty_growth: float = num(1e-3, 0, unit="1/update")
    exploration_std_min: float = num(0.1, 0, 1, unit="action units", low_open=True)  # actor std floor


@dataclass(frozen=True)
class GuidanceConfig:
    """VMR (critic) and AWAG (actor) weights from the advisor's actions; 0 disables. docs/architecture.md §6."""

    vmr_weight: float = num(0.0, 0, unit="1")  # lambda before the decay
    vmr_delta: float = num(2.0, unit="return units")  # Q(s, a_vlm) is regressed to Q(s, a) + delta
    vmr_hold_steps: int = num(50_000, 0, unit="env steps")  # lambda constant until here
    vmr_decay_end: int = num(150_000, 0, unit="env steps")  # ... and 0 from here on
    vmr_schedule: Literal["constant", "linear", "cosine"] = "linear"  # the decay after vmr_hold_steps
    awag_weight: float = num(0.0, 0, unit="1")  # iota at env step 0
    awag_decay_steps: int = num(300_000, 1, unit="env steps")
    awag_power: float = num(0.7, 0, unit="1", low_open=True)  # progress ** power inside the cosine
    awag_schedule: Literal["constant", "linear", "cosine"] = "cosine"
    awag_temperature: float = num(2.0, 0, unit="return units", low_open=True)  # w = exp(A / temperature)
    awag_max_weight: float = num(20.0, 0, unit="1", low_open=True)  # w clipped here
    bc_alpha: float = num(2.5, 0, unit="1", low_open=True)  # base actor loss * alpha / mean|Q| (TD3+BC form)


@dataclass(frozen=True)
class AgentConfig:
    """The algorithm (`algorithm` names one of the sections below) and what all of them share."""

    algorithm: str = "drqv2"
    network: Literal["small", "foundrl"] = "small"
    lr: float = num(1e-4, 0, unit="1/update", low_open=True)  # Adam step size of every optimiser
    gamma: float = num(0.99, 0, 1, unit="1/env step", high_open=True)  # discount
    tau: float = num(0.005, 0, 1, unit="1/update", low_open=True)  # target network soft-update rate
    n_step: int = num(3, 1, unit="env steps")  # return horizon of a transition batch
    augment_pad: int = num(4, 0, unit="px")  # DrQ random shift; 0 disables
    # Feed the previous control (state[0:3]: throttle, steer, brake) to the networks. Cloned policies
    # learn to copy it and then never start again after a stop (the inertia / copycat problem,
    # Codevilla et al. 2019, Wen et al. 2020): false zeroes it, on the learner and when acting.
    control_inputs: bool = True
    # A checkpoint (a run directory or one of its checkpoint directories) whose encoder, actor and
    # critic start this agent: online fine-tuning from an offline run (same network preset).
    init_from: str | None = None
    guidance: GuidanceConfig = section(GuidanceConfig)
    # The algorithm sections: one line per algorithm (learners/registry.py resolves `implementation`).
    drqv2: DrQv2Config = section(DrQv2Config)
    sac: SacConfig = section(SacConfig)
    td3: Td3Config = section(Td3Config)
    bc: BcConfig = section(BcConfig)  # offline
    td3bc: Td3BcConfig = section(Td3BcConfig)  # offline
    iql: IqlConfig = section(IqlConfig)  # offline
    vlsafe: VlSafeConfig = section(VlSafeConfig)  # world model: offline, online, offline-to-online

    @property
    def params(self):
        """The chosen algorithm's own section."""
        return getattr(self, self.algorithm)


def algorithm_names() -> tuple[str, ...]:
    """Every algorithm: the AgentConfig sections whose dataclass names an implementation."""
    defaults = AgentConfig()
    return tuple(
        f.name for f in dataclasses.fields(AgentConfig) if hasattr(getattr(defaults, f.name), "implementation")
    )


# -------------------------------------------------------------------------------------------- learner


@dataclass(frozen=True)
class LearnerConfig:
    batch_size: int = num(256, 1, unit="samples")
    # Host memory ~1.6 KB a row (the BEV LZ4-compressed: learners/bev_codec.py): 1M rows ~1.6 GB
    replay_capacity: int = num(150_000, 16, unit="rows")
    learning_starts: int = num(1024, 0, unit="env steps")  # no update before the replay holds this many
    samples_per_insert: float = num(32.0, 0, unit="samples/transition", low_open=True)  # the train ratio
    # How far (transitions) the workers may run ahead of the ratio before they wait for the learner;
    # null: never wait (the learner does what it can; the achieved ratio is reported).
    max_insert_lead: int | None = num(None, 1, unit="transitions")
    publish_every_updates: int = num(20, 1, unit="updates")  # workers see new weights this often
    checkpoint_every_updates: int = num(1000, 1, unit="updates")
    device: str = "auto"  # auto: cuda when available
    gpu_fraction: float = num(1.0, 0, 1, unit="GPU", low_open=True)  # below 1 shares the GPU with replicas
    # torch's intra-op threads in the learner's process (0: torch's default, one per core). On a
    # machine whose cores the workers also use, 1 avoids threads spinning against each other.
    torch_threads: int = num(0, 0, unit="threads")
    # Sample-time reward shaping (docs/architecture.md §6): r + clip_reward_scale * normalised CLIP margin bonus
    # (Found-RL uses 0.25) + semantic_reward_scale * (2 * safety - 1) (VLM-RL-style language goals).
    clip_reward_scale: float = num(0.0, 0, unit="reward/bonus")
    semantic_reward_scale: float = num(0.0, 0, unit="reward")


@dataclass(frozen=True)
class DataConfig:
    """A transition dataset (dataset/parquet.py) the learner learns from: all of each batch in
    run.mode offline; `offline_fraction` of it in an online run once online rows can be sampled."""

    dataset: str | None = None  # a dataset directory written by collect.py
    offline_fraction: float = num(0.5, 0, 1, unit="fraction of each batch")  # online runs only
    capacity: int = num(200_000, 16, unit="rows")  # of the dataset's replay (its newest rows are kept)
    skip_corrupt: bool = False  # skip (and log) shards that cannot be read instead of stopping


@dataclass(frozen=True)
class CollectConfig:
    """Dataset collection (collect.py): which policy acts, and where the rows go. The budget is
    run.total_env_steps; the workers are workers.num_workers on run.mode local or ray."""

    policy: Literal["expert", "random", "checkpoint"] = "expert"
    checkpoint: str | None = None  # policy checkpoint: a run directory or a checkpoint directory
    # DART-style held perturbations of the expert, so the data show recoveries: with this probability
    # a window of perturb_hold_steps acts with the expert's action plus one held Gaussian draw.
    perturb_std: float = num(0.0, 0, unit="action units")  # 0: the expert as it is
    perturb_probability: float = num(0.3, 0, 1, unit="fraction of windows")
    perturb_hold_steps: int = num(10, 1, unit="env steps")
    output: str | None = None  # the dataset directory; None: <run.runs_dir>/datasets/<run.name>
    rows_per_shard: int = num(1024, 16, unit="rows")  # a shard is at least this long (whole episodes)


@dataclass(frozen=True)
class EvalConfig:
    route_suite: str | None = None  # None: nocrash_eval on Town02 where maps exist, else generated
    town: str | None = None
    routes: tuple[int, ...] = check(
        (0, 1, 2), lambda v: len(v) >= 1 and min(v) >= 0, "a non-empty list of route indices >= 0"
    )
    traffic: Literal["empty", "regular", "dense"] = "regular"
    max_steps: int = num(3000, 1, unit="env steps")  # per route


@dataclass(frozen=True)
class RunConfig:
    name: str = "quickstart"
    # ray: a cluster (started if none); local: one process, no Ray; offline: the learner on
    # data.dataset alone (ends at run.total_updates), no environment until the evaluation
    mode: Literal["ray", "local", "offline"] = "ray"
    total_env_steps: int = num(20_000, 0, unit="env steps")  # the run ends here (0: no env-step budget)
    total_updates: int = num(0, 0, unit="updates")  # ... or here (0: no update budget)
    seed: int = num(0, 0, unit="1")
    runs_dir: str = "runs"
    progress_every_s: float = num(5.0, 0, unit="s", low_open=True)
    ray_address: str | None = None  # None: join a running cluster (ray job submit) or start one
    # How long the roles may wait for the cluster to hold them (an autoscaler adding nodes) before the
    # run stops saying what is missing.
    placement_timeout_s: float = num(120.0, 0, unit="s")
    shutdown_ray: bool = True  # disconnect from Ray at the end (tests that share a cluster say no)
    time_limit_s: float = num(0.0, 0, unit="s")  # stop after this long (0: no limit)
    checkpoint_every_s: float = num(300.0, 0, unit="s")  # also checkpoint on this wall-clock interval (0: never)
    # Where the run's scalars and episodes go besides progress.jsonl and episodes.csv (runner/tracking.py):
    # tensorboard (RUN_DIR/tb) and/or wandb (Weights & Biases, an optional extra: offline in RUN_DIR/wandb, no
    # login or network; `wandb sync` uploads it later, WANDB_MODE=online logs live). Names, no unit; [] for neither.
    trackers: tuple[str, ...] = check(
        ("tensorboard",),
        lambda v: len(set(v)) == len(v) and set(v) <= {"tensorboard", "wandb"},
        "a list of distinct names from: tensorboard, wandb",
    )


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

_MODEL_FIELDS = {
    "expert": {"vlm_action"},
    "slow": {"vlm_action"},
    "faulty": {"vlm_action"},
    "vlm": {"vlm_action"},
    "clip": {"clip_margin", "safety"},
    "drivevlm": {"semantic_score"},
}


def model_fields(model: str) -> set[str]:
    """The feedback fields a `feedback.model` can answer ("expert+clip" answers both sets)."""
    return set().union(*(_MODEL_FIELDS.get(part, set()) for part in model.split("+")))


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
    # semantic_score is what the DriveVLM-RL reward is made of (actors/row_reward.py): the model that
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
