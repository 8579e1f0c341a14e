"""Mentor's foundation-model rewards as gymnasium wrappers, for agents that are not Mentor's learner
(stable-baselines3, RLlib, CleanRL, ...).

    env = FoundationRewardWrapper(envs.make_env(...), scorer, FmRewardConfig(clip_bonus_scale=0.25))
    venv = FoundationRewardVectorWrapper(envs.make_vector_env(4, ...), scorer, config)  # one call per step

The scorer is any `list[FeedbackItem] -> list[FeedbackResult]` callable (core/feedback.py):
`local_scorer(...)` below (a CLIP model in this process), `feedback.registry.build_model(...)`, or
`integrations.serve_scorer.ServeScorer` (a running Serve feedback app). Each step's item carries the image,
route command and speed of the observation the action was chosen from, and the executed action, as
a rollout worker sends it (workers/rollout_worker.py `_item`). The terms, as Mentor computes them:

- clip_bonus (Found-RL §4.3; learners/reward_shaping.py): the running mean/std of every available
  clip_margin so far (updated with this step's, as the learner folds a chunk in before it samples),
  bonus = clip((margin - mean) / std, -1, 1), added as clip_bonus_scale * bonus (Found-RL: 0.25).
- semantic_reward (VLM-RL-style goals; learners/reward_shaping.py): semantic_scale * (2 safety - 1).
- drivevlm_reward (DriveVLM-RL's static pathway; workers/row_reward.py DriveVlmReward and
  envs/semantic_reward.py synthesize): REPLACES the env reward, as Mentor's row reward does, by
  r_speed f_center f_angle f_stability from semantic_score = alpha sim(pos) - beta sim(neg), or the
  penalty when the step terminated the episode. No dynamic (VLM) pathway: items are never gated.

Masks: a field the scorer did not answer, or answered with a value `validate` rejects, is
unavailable. Its term then adds nothing (clip_bonus / semantic_reward are None in `info`) and the
availability is reported in `info["fm_reward"]["available"]`; no default value stands in. For
drivevlm_reward an unavailable score takes R_norm = 1 (the plain target speed: VLM-RL's reward
without its language term), exactly as workers/row_reward.py does, and is reported the same way.

Scorer exceptions are not caught here: a local model that raises is a bug to see. A remote
transport that can time out (integrations/serve_scorer.py) answers nothing for that call instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from configs.schema import ClipConfig, DriveVlmConfig
from core.feedback import FeedbackItem, FeedbackResult, validate
from envs.semantic_reward import CenterHistory, StepFactors, synthesize
from learners.reward_shaping import RewardShaper

logger = logging.getLogger(__name__)

Scorer = Callable[[list[FeedbackItem]], list[FeedbackResult]]

CLIP_MARGIN, SAFETY, SEMANTIC_SCORE = "clip_margin", "safety", "semantic_score"
TERMS = {"clip_bonus": CLIP_MARGIN, "semantic_reward": SAFETY, "drivevlm_reward": SEMANTIC_SCORE}
INFO_KEY = "fm_reward"
_CONTEXT_KEYS = ("rgb_bev", "command", "speed")  # of the observation the action was chosen from
_FACTOR_KEYS = ("speed", "lateral", "heading_error")  # of the step's result (DriveVLM-RL's lane factors)


# ----- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FmRewardConfig:
    """Which foundation-model terms the wrappers add (a scale of 0 turns a term off)."""

    clip_bonus_scale: float = 0.25  # Found-RL's weight of the normalised CLIP action-alignment bonus
    semantic_scale: float = 0.0  # weight of 2 * safety - 1 (VLM-RL-style language goals)
    drivevlm: DriveVlmConfig | None = None  # DriveVLM-RL's static reward replaces the env reward when set

    def __post_init__(self):
        for name in ("clip_bonus_scale", "semantic_scale"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"FmRewardConfig.{name} is {value!r}; give a finite number >= 0 (0 turns it off)")
        if not self.wanted:
            raise ValueError(
                "FmRewardConfig turns every term off: set clip_bonus_scale > 0, semantic_scale > 0 "
                "or drivevlm=DriveVlmConfig()"
            )

    @property
    def wanted(self) -> tuple[str, ...]:
        """The feedback fields every item asks for."""
        return tuple(
            f
            for f, on in (
                (CLIP_MARGIN, self.clip_bonus_scale > 0),
                (SAFETY, self.semantic_scale > 0),
                (SEMANTIC_SCORE, self.drivevlm is not None),
            )
            if on
        )

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(term for term, f in TERMS.items() if f in self.wanted)


# ----- one step's inputs and outputs -----------------------------------------------------------
@dataclass(frozen=True)
class StepContext:
    """What the observation an action was chosen from showed (the item's image and context)."""

    image: np.ndarray  # uint8 [192, 192, 3] RGB BEV
    command: int
    speed: float

    @classmethod
    def from_info(cls, info: Mapping) -> StepContext:
        missing = [key for key in _CONTEXT_KEYS if key not in info]
        if missing:
            raise KeyError(
                f"the env's info lacks {missing}: the foundation-model rewards score the observation's "
                "RGB BEV ('rgb_bev'), route command and speed, which envs/driving_env.py puts into every "
                "reset and step info; wrap Mentor's driving env (or an env with the same info keys)"
            )
        return cls(image=np.asarray(info["rgb_bev"]), command=int(info["command"]), speed=float(info["speed"]))


@dataclass(frozen=True)
class Transition:
    env_index: int  # which env (0 for a single env)
    step: int  # that env's never-reset step counter
    context: StepContext  # of the observation the action was chosen from
    action: np.ndarray
    info: Mapping  # the step's own info (speed, lateral, heading_error for DriveVLM-RL)
    terminated: bool


@dataclass(frozen=True)
class StepReward:
    env_reward: float
    reward: float  # what the agent gets: base (env or DriveVLM-RL) + the available terms
    terms: dict[str, float | None]  # the amount each term added (drivevlm_reward: the base), None: unavailable
    scores: dict[str, float | None]  # the validated raw feedback values, None: unavailable
    available: dict[str, bool] = field(default_factory=dict)

    def as_info(self) -> dict:
        return {
            "env_reward": self.env_reward,
            "reward": self.reward,
            **self.terms,
            **self.scores,
            "available": dict(self.available),
        }


# ----- the terms ------------------------------------------------------------------------------
class FoundationRewards:
    """Scores a batch of transitions with ONE scorer call and turns the answers into rewards."""

    def __init__(self, scorer: Scorer, config: FmRewardConfig = FmRewardConfig()):
        self.scorer, self.config = scorer, config
        # The learner's own terms (clip_bonus, semantic_reward) and margin normalisation.
        self.shaper = RewardShaper(config.clip_bonus_scale, config.semantic_scale)
        self._centres: dict[int, CenterHistory] = {}
        self.calls = 0  # scorer calls
        self.items = 0  # items sent
        self.unavailable = {f: 0 for f in config.wanted}  # items whose field was unavailable

    def start_episode(self, env_index: int) -> None:
        if self.config.drivevlm is not None:
            self._centre(env_index).reset()

    def score(self, transitions: Sequence[Transition], env_rewards: Sequence[float]) -> list[StepReward]:
        if not transitions:
            return []
        items = [self._item(t) for t in transitions]
        self.calls += 1
        self.items += len(items)
        answers = {r.key: r.values for r in self.scorer(items)}
        scores = [self._validated(answers.get(item.key)) for item in items]
        feedback = _feedback_arrays(scores)
        self.margins.update(feedback[CLIP_MARGIN][feedback[f"{CLIP_MARGIN}_mask"] > 0])
        shaped = self.shaper.terms(feedback)
        return [
            self._reward(t, float(r), s, {term: float(v[i]) for term, v in shaped.items()})
            for i, (t, r, s) in enumerate(zip(transitions, env_rewards, scores))
        ]

    @property
    def margins(self):
        return self.shaper.margins

    def _item(self, t: Transition) -> FeedbackItem:
        return FeedbackItem(
            env_id=t.env_index,
            step=t.step,
            wanted=self.config.wanted,
            command=t.context.command,
            speed=t.context.speed,
            action=np.asarray(t.action, dtype=np.float32).copy(),
            image=t.context.image,
        )

    def _validated(self, values: Mapping | None) -> dict[str, float | None]:
        """Each wanted field's value, or None when missing or malformed (inference/feedback.validate)."""
        out = {}
        for name in self.config.wanted:
            value, ok = validate(name, None if values is None else values.get(name))
            out[name] = float(value) if ok else None
            self.unavailable[name] += not ok
        return out

    def _reward(
        self, t: Transition, env_reward: float, scores: dict[str, float | None], shaped: dict[str, float]
    ) -> StepReward:
        c = self.config
        terms: dict[str, float | None] = {}
        base = env_reward
        if c.drivevlm is not None:
            base = terms["drivevlm_reward"] = self._drivevlm(t, scores[SEMANTIC_SCORE])
        for term, value in shaped.items():  # None where its field was unavailable (the shaper adds 0 there)
            terms[term] = None if scores[TERMS[term]] is None else value
        added = sum(v for k, v in terms.items() if k != "drivevlm_reward" and v is not None)
        return StepReward(
            env_reward=env_reward,
            reward=float(base + added),
            terms=terms,
            scores=scores,
            available={name: scores[name] is not None for name in c.wanted},
        )

    def _drivevlm(self, t: Transition, score: float | None) -> float:
        missing = [key for key in _FACTOR_KEYS if key not in t.info]
        if missing:
            raise KeyError(
                f"the step's info lacks {missing}: DriveVLM-RL's reward needs the ego's speed and its "
                "distance ('lateral') and heading error against the route, which envs/driving_env.py "
                "reports every step; turn FmRewardConfig.drivevlm off for envs without them"
            )
        std = self._centre(t.env_index).push(float(t.info["lateral"]))
        return synthesize(score, StepFactors.from_info(t.info, std, t.terminated), self.config.drivevlm)

    def _centre(self, env_index: int) -> CenterHistory:
        if env_index not in self._centres:
            self._centres[env_index] = CenterHistory(self.config.drivevlm.stability_window)
        return self._centres[env_index]

    def stats(self) -> dict[str, float]:
        out = {
            "calls": self.calls,
            "items": self.items,
            **{f"{name}_unavailable": n for name, n in self.unavailable.items()},
        }
        if CLIP_MARGIN in self.config.wanted:
            out["clip_margin_mean"] = self.margins.mean
        return out

    def state_dict(self) -> dict:
        """The running normalisation (the only state that outlives an episode)."""
        return self.shaper.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shaper.load_state_dict(state)


def _feedback_arrays(scores: list[dict[str, float | None]]) -> dict[str, np.ndarray]:
    """The validated scores as the learner's feedback arrays: value (0 where unavailable) and mask per field."""
    out = {}
    for name in (CLIP_MARGIN, SAFETY):
        values = [s.get(name) for s in scores]
        out[name] = np.array([0.0 if v is None else v for v in values])
        out[f"{name}_mask"] = np.array([v is not None for v in values], dtype=np.float32)
    return out


# ----- one env ----------------------------------------------------------------------------------
class FoundationRewardWrapper(gym.Wrapper):
    """One env, one scorer call per step. What stable-baselines3 wraps (its VecEnvs hold gymnasium envs)."""

    def __init__(self, env: gym.Env, scorer: Scorer, config: FmRewardConfig = FmRewardConfig()):
        super().__init__(env)
        self.rewards = FoundationRewards(scorer, config)
        self._context: StepContext | None = None
        self._step = 0

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._context = StepContext.from_info(info)
        self.rewards.start_episode(0)
        return obs, info

    def step(self, action):
        if self._context is None:
            raise RuntimeError("FoundationRewardWrapper.step() before reset() or after the episode ended: call reset()")
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        transition = Transition(0, self._step, self._context, np.asarray(action), info, bool(terminated))
        self._step += 1
        (result,) = self.rewards.score([transition], [env_reward])
        info = {**info, INFO_KEY: result.as_info()}
        self._context = None if terminated or truncated else StepContext.from_info(info)
        return obs, result.reward, terminated, truncated, info

    def state_dict(self) -> dict:
        return self.rewards.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.rewards.load_state_dict(state)


# ----- a vector env -----------------------------------------------------------------------------
def _at(infos: Mapping, index: int, keys: Sequence[str]) -> dict:
    """Env `index`'s entries of a gymnasium vector info (each key's `_key` mask says whether it has one)."""
    out = {}
    for key in keys:
        mask = infos.get(f"_{key}")
        if key in infos and (mask is None or bool(mask[index])):
            out[key] = infos[key][index]
    return out


class FoundationRewardVectorWrapper(gym.vector.VectorWrapper):
    """A gymnasium vector env (Sync or Async): ONE scorer call per vector step for all sub-envs.

    Autoreset: NEXT_STEP (gymnasium's default): the step that resets an env is not a transition, so it
    gets no terms (`transition` False in info); SAME_STEP: the ended step's own info comes from
    `final_info`; DISABLED: an ended env is scored again after the caller resets it.

    info["fm_reward"]: per-env arrays `env_reward`, `reward`, `transition` (bool), one float array per term
    and per field (NaN where unavailable or no transition), and `available`: a bool array per field.
    """

    def __init__(self, env: gym.vector.VectorEnv, scorer: Scorer, config: FmRewardConfig = FmRewardConfig()):
        super().__init__(env)
        self.rewards = FoundationRewards(scorer, config)
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        self.autoreset_mode = mode if isinstance(mode, AutoresetMode) else AutoresetMode(mode)
        self._contexts: list[StepContext | None] = [None] * self.num_envs
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._ended = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed=None, options=None):
        obs, infos = self.env.reset(seed=seed, options=options)
        for i in range(self.num_envs):
            if "rgb_bev" in _at(infos, i, ("rgb_bev",)):  # a partial reset (reset_mask) leaves the others
                self._start(i, infos)
        return obs, infos

    def _start(self, i: int, infos: Mapping) -> None:
        self._contexts[i] = StepContext.from_info(_at(infos, i, _CONTEXT_KEYS))
        self._ended[i] = False
        self.rewards.start_episode(i)

    def step(self, actions):
        obs, env_rewards, terminated, truncated, infos = self.env.step(actions)
        transitions, restarted = [], []
        for i in range(self.num_envs):
            if self.autoreset_mode == AutoresetMode.NEXT_STEP and self._ended[i]:
                restarted.append(i)  # this step reset env i: no transition
                continue
            if self._contexts[i] is None:
                raise RuntimeError(f"sub-env {i} was stepped without a reset: call reset() first")
            ended = bool(terminated[i] or truncated[i])
            same_step_reset = ended and self.autoreset_mode == AutoresetMode.SAME_STEP
            step_info = _at(infos["final_info"], i, _FACTOR_KEYS) if same_step_reset else _at(infos, i, _FACTOR_KEYS)
            transitions.append(
                Transition(
                    i, int(self._steps[i]), self._contexts[i], np.asarray(actions[i]), step_info, bool(terminated[i])
                )
            )
            self._steps[i] += 1
            if same_step_reset:
                restarted.append(i)
            elif not ended:
                self._contexts[i] = StepContext.from_info(_at(infos, i, _CONTEXT_KEYS))
        results = self.rewards.score(transitions, [env_rewards[t.env_index] for t in transitions])
        for i in restarted:  # after scoring: a SAME_STEP env's last transition still used its episode state
            self._start(i, infos)
        self._ended = np.logical_or(terminated, truncated)
        for i in np.flatnonzero(self._ended):
            if self.autoreset_mode != AutoresetMode.SAME_STEP:
                self._contexts[i] = None
        rewards, info = self._vector_info(env_rewards, transitions, results)
        infos = {**infos, INFO_KEY: info, f"_{INFO_KEY}": np.ones(self.num_envs, dtype=bool)}
        return obs, rewards, terminated, truncated, infos

    def _vector_info(self, env_rewards, transitions: list[Transition], results: list[StepReward]):
        n, config = self.num_envs, self.rewards.config
        rewards = np.asarray(env_rewards, dtype=np.float64).copy()
        info = {
            "env_reward": np.asarray(env_rewards, dtype=np.float64).copy(),
            "transition": np.zeros(n, bool),
            **{name: np.full(n, np.nan) for name in (*config.terms, *config.wanted)},
            "available": {name: np.zeros(n, bool) for name in config.wanted},
        }
        for t, result in zip(transitions, results):
            i = t.env_index
            rewards[i] = result.reward
            info["transition"][i] = True
            for name, value in (*result.terms.items(), *result.scores.items()):
                info[name][i] = np.nan if value is None else value
            for name, ok in result.available.items():
                info["available"][name][i] = ok
        info["reward"] = rewards.copy()
        return rewards.astype(np.asarray(env_rewards).dtype, copy=False), info

    def state_dict(self) -> dict:
        return self.rewards.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.rewards.load_state_dict(state)


# ----- a local scorer ---------------------------------------------------------------------------
class _NoVlm:
    """The DriveVLM-RL model's describer where only the static pathway runs (items are never gated)."""

    def describe(self, windows):
        raise RuntimeError("the gym reward wrappers use DriveVLM-RL's static pathway only; no VLM is loaded")


def local_scorer(
    config: FmRewardConfig, clip: ClipConfig | None = None, *, max_batch: int = 64, clip_model=None
) -> Scorer:
    """The feedback models `config` needs, on one CLIP model in this process: `clip_model` (an
    feedback.clip_model.ClipModel), else loaded from `clip` as feedback/registry.py loads
    feedback.clip (default ClipConfig(): the checkpoint teacher_training.clip_training writes)."""
    from feedback.clip_feedback import ClipFeedback
    from feedback.drivevlm_feedback import DriveVlmFeedback
    from feedback.registry import CombinedModel, load_clip

    clip = clip or ClipConfig()
    if clip_model is None:
        clip_model = load_clip(clip)
    parts = []
    if {CLIP_MARGIN, SAFETY} & set(config.wanted):
        parts.append(ClipFeedback(clip_model, clip.safe_prompts, clip.unsafe_prompts, max_batch=max_batch))
    if config.drivevlm is not None:
        parts.append(DriveVlmFeedback.from_config(clip_model, _NoVlm(), config.drivevlm))
    return parts[0] if len(parts) == 1 else CombinedModel(parts)
