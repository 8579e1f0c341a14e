"""DriveVLM-RL's reward through a rollout worker on the real embedded simulator (one process):
the DriveVLM feedback model (tiny CLIP, stand-in VLM) answers on a local in-process batcher; rows
ship with the synthesized reward, recomputed here from the env's own step infos and the scores
the model answered; frames travel only with gated items; every row shipped arrives."""

import dataclasses

import numpy as np
import pytest
import torch

from configs.loader import load_config
from core import PolicySnapshot
from core.feedback import validate
from dataset.rows import ROW_SPEC
from envs.semantic_reward import CenterHistory, StepFactors, synthesize
from feedback.clip_model import ClipModel, ClipSource
from feedback.drivevlm_feedback import DriveVlmFeedback
from learners.replay import ReplayBuffer
from workers.assembly import make_env
from workers.feedback_client import FeedbackClient, InProcessBatcher
from workers.rollout_worker import RolloutWorker

pytestmark = pytest.mark.sim


class ConstantPolicy:
    def initial_carry(self, batch_size):
        return None

    def act(self, carry, obs, is_first, *, explore, step):
        return carry, np.tile(np.array([0.4, 0.0], np.float32), (len(obs["bev"]), 1))

    def load_weights(self, weights):
        pass


def no_sync(known_version):
    return 0, PolicySnapshot(0, {}) if known_version < 0 else None


class Describer:
    """A stand-in VLM: every third window gets no usable answer."""

    def __init__(self):
        self.windows = 0

    def describe(self, windows):
        answers = []
        for _ in windows:
            self.windows += 1
            answers.append(None if self.windows % 3 == 0 else "A pedestrian is about to cross in front of the car")
        return answers


class Recording:
    """The feedback model, with every item it saw and every value it answered."""

    def __init__(self, model):
        self.model, self.inputs = model, model.inputs
        self.items, self.values = [], {}

    def __call__(self, items):
        results = self.model(items)
        self.items.extend(items)
        self.values.update({r.key: r.values for r in results})
        return results


class RecordingEnv:
    """The real env, with each reset and step's info in order."""

    def __init__(self, env):
        self.env, self.unwrapped = env, env.unwrapped
        self.events = []

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.events.append(("reset", info, False))
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.events.append(("step", info, terminated))
        return obs, reward, terminated, truncated, info

    def close(self):
        self.env.close()


def test_rows_ship_with_the_synthesized_reward_and_frames_go_only_with_the_gate():
    base = load_config(
        None,
        [
            "env.town=Generated",
            "env.traffic=regular",
            "workers.num_workers=1",
            "workers.random_steps=0",
            "workers.chunk_size=16",
            "feedback.model=drivevlm",
            "feedback.wanted=[semantic_score]",
            "feedback.bundle_steps=4",
            "feedback.drivevlm.history_frames=2",
            "feedback.drivevlm.gate_lateral=8",
        ],
    )
    cfg = dataclasses.replace(base, feedback=dataclasses.replace(base.feedback, deadline_s=10.0, max_pending_age_s=5.0))
    drive = cfg.feedback.drivevlm
    torch.manual_seed(0)
    model = Recording(DriveVlmFeedback.from_config(ClipModel.load(ClipSource("MentorCLIP-Tiny")), Describer(), drive))
    client = FeedbackClient(InProcessBatcher(model, max_batch_size=16).send, "async", timeout_s=10.0)
    env = RecordingEnv(make_env(cfg.env))
    chunks, replay = [], ReplayBuffer(4096)

    def ship(chunk):
        chunks.append(chunk)
        replay.add(chunk)

    w = RolloutWorker(
        cfg, 2, env, ConstantPolicy(), client, ship=ship, sync=no_sync, model_inputs=DriveVlmFeedback.inputs, seed=1
    )
    try:
        w.run(160)
        w.drain()
    finally:
        w.close()

    # Every row shipped arrived, in step order, in the replay's own layout (no semantic fields).
    n = len(replay)
    assert sum(len(c["step"]) for c in chunks) == w.stats.shipped_rows == n
    assert all(set(c) == set(ROW_SPEC) for c in chunks)
    steps = replay.arrays["step"][:n]
    assert steps.tolist() == list(range(n))
    step_events = [e for e in env.events if e[0] == "step"]
    is_last = replay.arrays["is_last"][:n]
    assert (~is_last).sum() == len(step_events) == 160

    # Frames only with an open gate: K + 1 of them, the item's own image last.
    items = model.items
    assert len(items) == 160
    gated = [item for item in items if item.gate]
    assert 0 < len(gated) < len(items), "the run should see walkers near the route and steps without"
    for item in items:
        if item.gate:
            assert len(item.frames) == drive.history_frames + 1 and item.frames[-1] is item.image
        else:
            assert item.frames is None
    report = w.feedback_report()
    assert report["gate_rate"] == pytest.approx(len(gated) / len(items))
    assert report["requested_items"] == 160 and report["gated_items"] == len(gated)
    assert report["vlm_answers"] == len(gated) and report["vlm_latency_s"] > 0.0
    assert report["expired"] == 0  # every answer came in time: the masks are the answers' validity

    # The reward of every transition row, recomputed from the env's infos and the answered scores.
    history, expected, unscored = CenterHistory(drive.stability_window), [], 0
    row_steps = iter(steps[~is_last].tolist())
    for kind, info, terminated in env.events:
        if kind == "reset":
            history.reset()
            continue
        factors = StepFactors(
            speed=info["speed"],
            center_distance=abs(info["lateral"]),
            heading_error=info["heading_error"],
            center_std=history.push(info["lateral"]),
            catastrophic=terminated,
        )
        score, ok = validate("semantic_score", model.values[(2, next(row_steps))].get("semantic_score"))
        unscored += not ok and not terminated
        expected.append(synthesize(score if ok else None, factors, drive))
    np.testing.assert_allclose(replay.arrays["reward"][:n][~is_last], np.float32(expected), rtol=1e-5, atol=1e-6)
    assert unscored > 0  # the stand-in VLM leaves every third gated window undescribed
    assert report["unscored_steps"] == unscored and report["synthesized_steps"] == 160
