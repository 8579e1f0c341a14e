"""The `agent` section: what every algorithm shares, VMR/AWAG guidance, and one section per algorithm
(each names the module that implements it; learners/registry.py resolves it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

from configs.schema.fields import num, section

NETWORK_PRESETS = ("small", "foundrl")


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
