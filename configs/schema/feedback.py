"""The `feedback` section: the feedback models (CLIP, the VLM advisor, DriveVLM-RL's reward), how the
workers reach them, and which fields each model answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from configs.schema.fields import check, num, section

FEEDBACK_MODES = ("off", "async", "sync")
FEEDBACK_FIELDS = ("vlm_action", "clip_margin", "safety", "semantic_score")


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
    """Which open_clip model answers clip_margin and safety (see feedback/clip_model.py)."""

    arch: str = "MentorCLIP-Tiny"
    pretrained: str | None = None  # an open_clip tag of `arch` (laion2b_s34b_b88k) or a weights file
    # The checkpoint `python -m teacher_training.clip_training` writes by default; wins over arch/pretrained.
    checkpoint: str | None = "artifacts/clip/mentor-clip-tiny"
    safe_prompts: tuple[str, ...] = check(SAFE_PROMPTS, lambda v: len(v) >= 1, "a non-empty list of prompts")
    unsafe_prompts: tuple[str, ...] = check(UNSAFE_PROMPTS, lambda v: len(v) >= 1, "a non-empty list of prompts")
    device: str = "auto"  # auto: cuda when the replica has a GPU


@dataclass(frozen=True)
class VlmConfig:
    """The VLM advisor on vLLM (feedback/vlm_advisor.py)."""

    # A local path (a model teacher_training/vlm_finetune.py wrote, or a downloaded checkpoint) or a hub id
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
    semantic_score = R_static + R_dyn (feedback/drivevlm_feedback.py); the rollout worker turns it into
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
    # as teacher_training/vlm_finetune.py's --frames 3 teaches the small VLM).
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
