"""Mentor's foundation-model rewards as gymnasium wrappers (integrations/gym_rewards.py).

Fast: a deterministic scripted scorer on a tiny scripted env: the terms' numbers by hand, masks
(missing, malformed and out-of-range answers add nothing and say so in info), which observation an
item describes, one scorer call per vector step across sub-envs and autoreset, saved normalisation,
and the Serve scorer's key offsets, bundling and failures on a stand-in handle.
sim: the real env with a real tiny open_clip model: the single-env wrapper, stable-baselines3 PPO on
it, and an AsyncVectorEnv of two processes with one model call per step.
ray: a real Serve feedback app (cluster/feedback_service.py) answering the wrapper.
"""

from __future__ import annotations

import math
import uuid

import gymnasium as gym
import numpy as np
import pytest

from configs.schema import ClipConfig, DriveVlmConfig
from core.feedback import FeedbackResult
from integrations.gym_rewards import (
    INFO_KEY,
    FmRewardConfig,
    FoundationRewardVectorWrapper,
    FoundationRewardWrapper,
    local_scorer,
)

V_MAX = DriveVlmConfig().v_max  # 25 km/h


# ----- a scripted env and scorer --------------------------------------------------------------
class ScriptedEnv(gym.Env):
    """Info like envs/driving_env.py's; the image of observation k is filled with k, command 4,
    speed k / 10; episodes end (terminated) after `length` steps; env reward 1 per step."""

    observation_space = gym.spaces.Box(0, 1000, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def __init__(self, length=3, lateral=0.0, speed=None):
        self.length, self.lateral, self.speed = length, lateral, speed
        self.t = 0

    def _info(self):
        speed = self.t / 10 if self.speed is None else self.speed
        return {
            "rgb_bev": np.full((192, 192, 3), self.t % 256, np.uint8),
            "command": 4,
            "speed": speed,
            "lateral": self.lateral,
            "heading_error": 0.0,
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), self._info()

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        return np.array([self.t], np.float32), 1.0, done, False, self._info()


class ScriptedScorer:
    """Answers each item from `answer(item) -> values dict | None` (None: no result at all); records calls."""

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def __call__(self, items):
        self.calls.append(list(items))
        out = []
        for item in items:
            values = self.answer(item)
            if values is not None:
                out.append(FeedbackResult(item.env_id, item.step, values))
        return out[::-1]  # any order


def margin_by_step(margins):
    return lambda item: {"clip_margin": margins[item.step]}


def run(env, actions):
    env.reset(seed=0)
    return [env.step(np.asarray(a, np.float32)) for a in actions]


def frozen_stats(wrapper, mean, std):
    """Running stats that a step's update barely moves (count 1e12): the bonus is (m - mean) / std."""
    wrapper.load_state_dict({"margins": {"mean": mean, "var": std**2, "count": 1e12}})


# ----- configuration --------------------------------------------------------------------------
def test_config_names_the_bad_field_and_needs_a_term():
    with pytest.raises(ValueError, match="clip_bonus_scale"):
        FmRewardConfig(clip_bonus_scale=-1.0)
    with pytest.raises(ValueError, match="semantic_scale"):
        FmRewardConfig(semantic_scale=float("nan"))
    with pytest.raises(ValueError, match="every term off"):
        FmRewardConfig(clip_bonus_scale=0.0)
    assert FmRewardConfig().wanted == ("clip_margin",)  # Found-RL's bonus at 0.25 by default
    both = FmRewardConfig(semantic_scale=1.0, drivevlm=DriveVlmConfig())
    assert both.wanted == ("clip_margin", "safety", "semantic_score")


# ----- the terms, by hand ---------------------------------------------------------------------
def test_clip_bonus_is_the_clipped_normalised_margin_times_a_quarter():
    scorer = ScriptedScorer(margin_by_step([0.3, 0.9, 0.1]))
    env = FoundationRewardWrapper(ScriptedEnv(length=3), scorer)
    env.reset(seed=0)
    frozen_stats(env, mean=0.2, std=0.2)
    rewards = [env.step(np.zeros(2, np.float32))[1] for _ in range(3)]
    # (0.3-0.2)/0.2 = 0.5; (0.9-0.2)/0.2 = 3.5 -> 1; (0.1-0.2)/0.2 = -0.5; times 0.25, plus env reward 1
    assert rewards == pytest.approx([1.125, 1.25, 0.875], abs=1e-6)


def test_running_stats_fold_each_margin_in_before_its_bonus():
    scorer = ScriptedScorer(margin_by_step([0.2, 0.6]))
    env = FoundationRewardWrapper(ScriptedEnv(length=5), scorer, FmRewardConfig(clip_bonus_scale=1.0))
    run(env, [[0, 0]])
    r1 = env.step(np.zeros(2, np.float32))[1]
    state = env.state_dict()["margins"]
    assert state["mean"] == pytest.approx(0.4, abs=1e-4) and state["var"] == pytest.approx(0.04, abs=1e-4)
    assert r1 == pytest.approx(1.0 + 1.0, abs=1e-3)  # (0.6 - 0.4) / 0.2 = 1


def test_semantic_reward_is_two_safety_minus_one_scaled():
    scorer = ScriptedScorer(lambda item: {"safety": [0.8, 0.25][item.step]})
    env = FoundationRewardWrapper(ScriptedEnv(), scorer, FmRewardConfig(clip_bonus_scale=0.0, semantic_scale=0.5))
    (_, r0, _, _, i0), (_, r1, *_) = run(env, [[0, 0], [0, 0]])
    assert r0 == pytest.approx(1.0 + 0.5 * 0.6) and r1 == pytest.approx(1.0 + 0.5 * -0.5)
    assert i0[INFO_KEY]["semantic_reward"] == pytest.approx(0.3) and i0[INFO_KEY]["safety"] == pytest.approx(0.8)


def test_drivevlm_static_reward_replaces_the_env_reward_as_the_row_reward_does():
    """score -0.015 in [lo, hi] = [-0.03, 0]: R_norm 0.5, v_des = v_max / 2."""
    config = FmRewardConfig(clip_bonus_scale=0.0, drivevlm=DriveVlmConfig())
    scorer = ScriptedScorer(lambda item: {"semantic_score": -0.015})
    env = FoundationRewardWrapper(ScriptedEnv(length=3, lateral=1.5, speed=V_MAX / 2), scorer, config)
    env.reset(seed=0)
    _, r0, _, _, info = env.step(np.zeros(2, np.float32))
    assert r0 == pytest.approx(0.5)  # r_speed 1, f_center 1 - 1.5/3, f_angle 1, std of [1.5] = 0
    assert info[INFO_KEY]["env_reward"] == 1.0 and info[INFO_KEY]["drivevlm_reward"] == pytest.approx(0.5)
    env.env.lateral = 0.5
    assert env.step(np.zeros(2, np.float32))[1] == pytest.approx(0.0)  # std of [1.5, 0.5] = 0.5 > 0.4
    assert env.step(np.zeros(2, np.float32))[1] == pytest.approx(-10.0)  # terminated: the penalty
    env.reset(seed=0)  # a new episode: the centre history starts again
    env.env.lateral = 0.0
    assert env.step(np.zeros(2, np.float32))[1] == pytest.approx(1.0)
    assert all(c[0].wanted == ("semantic_score",) and not c[0].gate and c[0].frames is None for c in scorer.calls)


def test_drivevlm_without_a_score_uses_the_plain_target_speed_and_says_so():
    config = FmRewardConfig(clip_bonus_scale=0.0, drivevlm=DriveVlmConfig())
    env = FoundationRewardWrapper(ScriptedEnv(speed=V_MAX / 2), ScriptedScorer(lambda item: {}), config)
    ((_, reward, _, _, info),) = run(env, [[0, 0]])
    assert reward == pytest.approx(0.5)  # R_norm 1: v_des = v_max, r_speed = 1 - 0.5
    assert info[INFO_KEY]["available"] == {"semantic_score": False} and info[INFO_KEY]["semantic_score"] is None


# ----- masks ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answer",
    [
        None,
        {},
        {"clip_margin": float("nan")},
        {"clip_margin": "n/a"},
        {"clip_margin": [0.4, 0.5]},
        {"clip_margin": None},
        {"safety": 0.5},
    ],
)
def test_an_unavailable_margin_adds_nothing_and_info_says_so(answer):
    env = FoundationRewardWrapper(ScriptedEnv(), ScriptedScorer(lambda item: answer))
    env.reset(seed=0)
    frozen_stats(env, mean=0.0, std=1.0)
    _, reward, _, _, info = env.step(np.zeros(2, np.float32))
    assert reward == 1.0  # the env's, untouched
    assert info[INFO_KEY] == {
        "env_reward": 1.0,
        "reward": 1.0,
        "clip_bonus": None,
        "clip_margin": None,
        "available": {"clip_margin": False},
    }
    assert env.state_dict()["margins"]["count"] == 1e12  # an unavailable margin is not folded in
    assert env.rewards.stats()["clip_margin_unavailable"] == 1


def test_out_of_range_safety_is_unavailable_while_the_margin_of_the_same_item_counts():
    scorer = ScriptedScorer(lambda item: {"clip_margin": 0.4, "safety": 1.5})
    env = FoundationRewardWrapper(ScriptedEnv(), scorer, FmRewardConfig(semantic_scale=1.0))
    env.reset(seed=0)
    frozen_stats(env, mean=0.2, std=0.4)
    _, reward, _, _, info = env.step(np.zeros(2, np.float32))
    assert reward == pytest.approx(1.0 + 0.25 * 0.5)
    assert info[INFO_KEY]["available"] == {"clip_margin": True, "safety": False}
    assert info[INFO_KEY]["semantic_reward"] is None


def test_answers_for_other_keys_are_ignored():
    def wrong_step(items):
        return [FeedbackResult(item.env_id, item.step + 1, {"clip_margin": 0.5}) for item in items]

    env = FoundationRewardWrapper(ScriptedEnv(), wrong_step)
    ((_, reward, _, _, info),) = run(env, [[0, 0]])
    assert reward == 1.0 and info[INFO_KEY]["available"] == {"clip_margin": False}


# ----- what an item describes -------------------------------------------------------------------
def test_each_item_describes_the_observation_the_action_was_chosen_from():
    scorer = ScriptedScorer(lambda item: {"clip_margin": 0.1})
    env = FoundationRewardWrapper(ScriptedEnv(length=2), scorer)
    run(env, [[0.5, 0.1], [-0.5, -0.1]])
    env.reset(seed=0)
    env.step(np.array([0.2, 0.0], np.float32))
    items = [call[0] for call in scorer.calls]
    assert [int(i.image[0, 0, 0]) for i in items] == [0, 1, 0]  # observation t's image for action t
    assert [i.speed for i in items] == pytest.approx([0.0, 0.1, 0.0])
    assert [i.step for i in items] == [0, 1, 2]  # never reset: keys stay unique
    assert np.allclose(items[1].action, [-0.5, -0.1]) and items[0].command == 4
    with pytest.raises(RuntimeError, match="reset"):
        FoundationRewardWrapper(ScriptedEnv(), scorer).step(np.zeros(2, np.float32))


def test_an_env_without_the_image_in_its_info_fails_with_what_to_do():
    env = FoundationRewardWrapper(gym.make("Pendulum-v1"), ScriptedScorer(lambda item: {}))
    with pytest.raises(KeyError, match="rgb_bev"):
        env.reset(seed=0)


def test_normalisation_state_round_trips():
    first = FoundationRewardWrapper(
        ScriptedEnv(length=50), ScriptedScorer(lambda item: {"clip_margin": item.step / 50})
    )
    run(first, [[0, 0]] * 20)
    second = FoundationRewardWrapper(ScriptedEnv(length=50), ScriptedScorer(lambda item: {"clip_margin": 0.7}))
    second.load_state_dict(first.state_dict())
    assert second.state_dict() == first.state_dict()
    second.reset(seed=0)
    expected = first.rewards.margins
    expected.update(np.array([0.7]))
    assert second.step(np.zeros(2, np.float32))[1] == pytest.approx(1.0 + 0.25 * float(expected.bonus(0.7)))


# ----- vector envs ------------------------------------------------------------------------------
def vector(lengths, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP, answer=None, config=None):
    envs = gym.vector.SyncVectorEnv([lambda n=n: ScriptedEnv(length=n) for n in lengths], autoreset_mode=autoreset_mode)
    scorer = ScriptedScorer(answer or (lambda item: {"clip_margin": 0.5, "semantic_score": -0.015}))
    return FoundationRewardVectorWrapper(envs, scorer, config or FmRewardConfig()), scorer


def test_one_scorer_call_per_vector_step_and_no_terms_on_autoreset_steps():
    env, scorer = vector([2, 3], answer=lambda item: {"clip_margin": 0.2 + 0.1 * item.env_id})
    env.reset(seed=0)
    frozen_stats(env, mean=0.2, std=0.2)
    steps = [env.step(np.zeros((2, 2), np.float32)) for _ in range(4)]
    assert len(scorer.calls) == 4
    # env 0 ends at step 2 (reset at 3), env 1 at step 3 (reset at 4)
    assert [[i.env_id for i in call] for call in scorer.calls] == [[0, 1], [0, 1], [1], [0]]
    assert [[i.step for i in call] for call in scorer.calls] == [[0, 0], [1, 1], [2], [2]]
    transition = np.array([s[4][INFO_KEY]["transition"] for s in steps])
    assert transition.tolist() == [[True, True], [True, True], [False, True], [True, False]]
    rewards = np.array([s[1] for s in steps])  # env 1 bonus (0.3 - 0.2) / 0.2 * 0.25 = 0.125
    assert rewards == pytest.approx(np.array([[1.0, 1.125], [1.0, 1.125], [0.0, 1.125], [1.0, 0.0]]))
    info = steps[2][4][INFO_KEY]
    assert math.isnan(info["clip_bonus"][0]) and info["clip_bonus"][1] == pytest.approx(0.125)
    assert info["available"]["clip_margin"].tolist() == [False, True]
    assert info["env_reward"].tolist() == [0.0, 1.0]
    assert int(scorer.calls[3][0].image[0, 0, 0]) == 0  # env 0's first observation after its reset


def test_vector_masks_are_per_env():
    env, _ = vector([5, 5], answer=lambda item: {"clip_margin": 0.4} if item.env_id == 1 else None)
    env.reset(seed=0)
    frozen_stats(env, mean=0.2, std=0.4)
    _, rewards, _, _, infos = env.step(np.zeros((2, 2), np.float32))
    assert rewards.tolist() == pytest.approx([1.0, 1.125])
    assert infos[INFO_KEY]["available"]["clip_margin"].tolist() == [False, True]
    assert math.isnan(infos[INFO_KEY]["clip_margin"][0]) and infos[INFO_KEY]["clip_margin"][1] == pytest.approx(0.4)


def test_same_step_autoreset_scores_the_ended_step_from_final_info():
    config = FmRewardConfig(clip_bonus_scale=0.0, drivevlm=DriveVlmConfig())
    env, scorer = vector([1, 3], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, config=config)
    env.reset(seed=0)
    _, rewards, terminated, _, infos = env.step(np.zeros((2, 2), np.float32))
    assert terminated.tolist() == [True, False] and rewards[0] == -10.0
    assert infos[INFO_KEY]["drivevlm_reward"][0] == -10.0  # the ended step itself, scored
    assert infos[INFO_KEY]["transition"].tolist() == [True, True]
    env.step(np.zeros((2, 2), np.float32))
    assert [i.env_id for i in scorer.calls[1]] == [0, 1]  # no lost step after a same-step reset
    assert int(scorer.calls[1][0].image[0, 0, 0]) == 0  # env 0's reset observation


# ----- the Serve scorer on a stand-in handle ------------------------------------------------------
class StandInResponse:
    def __init__(self, result):
        self._result = result

    def result(self, timeout_s):
        if isinstance(self._result, Exception):
            raise self._result
        return self._result


class StandInHandle:
    """Answers like the feedback app: clip_margin = step / 10 for every item, or fails."""

    def __init__(self, fail=False):
        self.fail, self.bundles = fail, []

    def remote(self, bundle):
        self.bundles.append(bundle)
        if self.fail:
            return StandInResponse(TimeoutError("no answer within the time-out"))
        return StandInResponse([FeedbackResult(i.env_id, i.step, {"clip_margin": i.step / 10}) for i in bundle])


def test_serve_scorer_offsets_keys_bundles_and_counts_failures():
    from integrations.serve_scorer import ServeScorer

    handle = StandInHandle()
    scorer = ServeScorer.from_handle(handle, timeout_s=5.0, max_bundle_items=2)
    env, _ = vector([9, 9, 9])
    env.rewards.scorer = scorer
    env.reset(seed=0)
    _, _, _, _, infos = env.step(np.zeros((3, 2), np.float32))
    assert [len(b) for b in handle.bundles] == [2, 1] and scorer.calls == 2
    sent = {i.env_id for b in handle.bundles for i in b}
    assert len(sent) == 3 and min(sent) >= 2**32  # this client's offset, shifted back in the answers
    assert all(math.isfinite(i.expires_at) for b in handle.bundles for i in b)
    assert infos[INFO_KEY]["available"]["clip_margin"].all()

    failing = ServeScorer.from_handle(StandInHandle(fail=True))
    env.rewards.scorer = failing
    _, rewards, _, _, infos = env.step(np.zeros((3, 2), np.float32))
    assert failing.failed_calls == 1 and rewards.tolist() == [1.0, 1.0, 1.0]
    assert not infos[INFO_KEY]["available"]["clip_margin"].any()


# ----- the real env and a real (tiny, randomly initialised) CLIP --------------------------------
@pytest.fixture(scope="module")
def tiny_clip():
    import torch

    from feedback.clip_model import ClipModel, ClipSource

    torch.manual_seed(0)
    return ClipModel.load(ClipSource("MentorCLIP-Tiny"))


class Counting:
    """The scorer, with each call's items and answers."""

    def __init__(self, scorer):
        self.scorer, self.calls, self.answers = scorer, [], {}

    def __call__(self, items):
        results = self.scorer(items)
        self.calls.append(list(items))
        self.answers.update({r.key: r.values for r in results})
        return results


ALL_TERMS = FmRewardConfig(clip_bonus_scale=0.25, semantic_scale=0.5, drivevlm=DriveVlmConfig())


@pytest.mark.sim
def test_real_env_and_clip_single_wrapper(tiny_clip):
    import envs
    from envs.semantic_reward import CenterHistory, StepFactors, synthesize

    scorer = Counting(local_scorer(ALL_TERMS, clip_model=tiny_clip))
    env = FoundationRewardWrapper(envs.make_env(town="Generated", traffic="regular", seed=1), scorer, ALL_TERMS)
    rng = np.random.default_rng(0)
    try:
        _, info = env.reset(seed=1)
        centre, previous = CenterHistory(DriveVlmConfig().stability_window), info
        for step in range(40):
            _, reward, terminated, truncated, info = env.step(rng.uniform(-0.3, 1.0, 2).astype(np.float32))
            fm = info[INFO_KEY]
            item = scorer.calls[-1][0]
            assert len(scorer.calls) == step + 1 and np.array_equal(item.image, previous["rgb_bev"])
            assert all(fm["available"].values())  # the local model answers every field
            factors = StepFactors(
                info["speed"], abs(info["lateral"]), info["heading_error"], centre.push(info["lateral"]), terminated
            )
            assert fm["drivevlm_reward"] == pytest.approx(synthesize(fm["semantic_score"], factors, DriveVlmConfig()))
            assert fm["semantic_reward"] == pytest.approx(0.5 * (2 * scorer.answers[item.key]["safety"] - 1))
            assert reward == pytest.approx(fm["drivevlm_reward"] + fm["clip_bonus"] + fm["semantic_reward"])
            previous = info
            if terminated or truncated:
                _, previous = env.reset()
                centre.reset()
    finally:
        env.close()


@pytest.mark.sim
@pytest.mark.slow
def test_stable_baselines3_ppo_learns_on_the_wrapped_env(tiny_clip):
    sb3 = pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    import envs

    config = FmRewardConfig(clip_bonus_scale=0.25, semantic_scale=0.5)
    scorer = Counting(local_scorer(config, clip_model=tiny_clip))
    seen = []

    class RewardsSeen(BaseCallback):
        def _on_step(self):
            seen.append((float(self.locals["rewards"][0]), self.locals["infos"][0][INFO_KEY]))
            return True

    vec = DummyVecEnv(
        [lambda: FoundationRewardWrapper(envs.make_env(town="Generated", traffic="regular", seed=2), scorer, config)]
    )
    try:
        model = sb3.PPO("MultiInputPolicy", vec, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
        model.learn(total_timesteps=256, callback=RewardsSeen())
    finally:
        vec.close()
    assert len(seen) == 256 and len(scorer.calls) == 256  # one call per env step
    assert all(r == pytest.approx(fm["reward"]) for r, fm in seen)  # SB3 learns from the shaped reward
    assert all(
        fm["reward"] == pytest.approx(fm["env_reward"] + fm["clip_bonus"] + fm["semantic_reward"]) for _, fm in seen
    )
    wrapper = vec.envs[0]
    while not isinstance(wrapper, FoundationRewardWrapper):
        wrapper = wrapper.env
    assert wrapper.rewards.margins.count > 255  # every margin folded in


@pytest.mark.sim
@pytest.mark.slow
def test_async_vector_env_of_two_processes_one_model_call_per_step(tiny_clip):
    import envs

    scorer = Counting(local_scorer(FmRewardConfig(semantic_scale=0.5), clip_model=tiny_clip))
    vec = FoundationRewardVectorWrapper(
        envs.make_vector_env(2, town="Generated", traffic="regular", seed=4), scorer, FmRewardConfig(semantic_scale=0.5)
    )
    rng = np.random.default_rng(0)
    try:
        _, infos = vec.reset(seed=4)
        previous, expected_calls = infos["rgb_bev"].copy(), 0
        for _ in range(30):
            _, rewards, _, _, infos = vec.step(rng.uniform(-0.3, 1.0, (2, 2)).astype(np.float32))
            fm = infos[INFO_KEY]
            expected_calls += bool(fm["transition"].any())
            assert len(scorer.calls) == expected_calls
            assert [i.env_id for i in scorer.calls[-1]] == np.flatnonzero(fm["transition"]).tolist()
            for item in scorer.calls[-1]:
                assert np.array_equal(item.image, previous[item.env_id])
                assert fm["available"]["clip_margin"][item.env_id] and fm["available"]["safety"][item.env_id]
            shaped = fm["env_reward"] + np.nan_to_num(fm["clip_bonus"]) + np.nan_to_num(fm["semantic_reward"])
            assert rewards == pytest.approx(shaped)
            previous = infos["rgb_bev"].copy()
        assert expected_calls >= 28
    finally:
        vec.close()


# ----- a real Serve feedback app -----------------------------------------------------------------
@pytest.mark.ray
@pytest.mark.sim
@pytest.mark.slow
def test_the_wrapper_through_a_running_serve_feedback_app(tiny_clip, tmp_path):
    ray = pytest.importorskip("ray")
    from ray import serve

    import envs
    from cluster.feedback_service import feedback_app
    from configs.schema import FeedbackConfig
    from integrations.serve_scorer import ServeScorer

    checkpoint = tiny_clip.save(tmp_path / "clip")
    feedback = FeedbackConfig(
        model="clip",
        wanted=("clip_margin", "safety"),
        max_batch_size=8,
        clip=ClipConfig(checkpoint=str(checkpoint), device="cpu"),
    )
    config = FmRewardConfig(clip_bonus_scale=0.25, semantic_scale=0.5)
    app_name = f"gym-rewards-{uuid.uuid4().hex[:8]}"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    env = None
    try:
        serve.run(feedback_app(feedback, 0, use_gpu=False), name=app_name, route_prefix=None)
        with pytest.raises(RuntimeError, match="no running Serve app"):
            ServeScorer(f"{app_name}-missing")
        scorer = Counting(ServeScorer(app_name, timeout_s=60.0, max_bundle_items=8))
        local = local_scorer(config, clip_model=tiny_clip)
        env = FoundationRewardWrapper(envs.make_env(town="Generated", traffic="regular", seed=3), scorer, config)
        env.reset(seed=3)
        for _ in range(8):
            _, reward, terminated, truncated, info = env.step(np.array([0.6, 0.0], np.float32))
            assert all(info[INFO_KEY]["available"].values()) and reward == info[INFO_KEY]["reward"]
            item = scorer.calls[-1][0]
            here = {r.key: r.values for r in local([item])}[item.key]
            assert scorer.answers[item.key] == pytest.approx(here, abs=1e-5)  # the deployment's model, same answer
            if terminated or truncated:
                env.reset()
        assert len(scorer.calls) == 8 and scorer.scorer.calls == 8 and scorer.scorer.failed_calls == 0
    finally:
        if env is not None:
            env.close()
        serve.delete(app_name)
        serve.shutdown()
        ray.shutdown()
