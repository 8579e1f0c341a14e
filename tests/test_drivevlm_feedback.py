"""The DriveVLM-RL feedback model on a real (tiny, randomly initialised) open_clip model and a
stand-in VLM describer: the static and dynamic pathways' numbers, batching (one image encoding,
one VLM call, one text encoding per batch), only gated items reaching the VLM, and unusable
descriptions leaving the score unavailable."""

import dataclasses

import numpy as np
import pytest
import torch

from configs.loader import load_config
from configs.schema import DriveVlmConfig
from core.feedback import FeedbackItem, validate
from feedback.clip_model import ClipModel, ClipSource
from feedback.drivevlm_feedback import DriveVlmFeedback

POSITIVE, NEGATIVE = "The road is clear with no car accidents", "Two cars have collided with each other on the road"
DYNAMIC = "The road ahead is clear with no obstacles"
RISK = "A pedestrian is crossing the road right in front of the car"


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return ClipModel.load(ClipSource("MentorCLIP-Tiny"))


class Describer:
    """A stand-in VLM: answers from a script (a text, None, or an exception), recording each call."""

    def __init__(self, answer=RISK):
        self.answer = answer
        self.calls: list[list[tuple]] = []

    def describe(self, windows):
        self.calls.append(list(windows))
        if isinstance(self.answer, Exception):
            raise self.answer
        if callable(self.answer):
            return self.answer(windows)
        return [self.answer] * len(windows)


def image(seed):
    return np.random.default_rng(seed).integers(0, 256, (192, 192, 3), dtype=np.uint8)


def item(step, gate=False, k=3, wanted=("semantic_score",), with_image=True, frames=True):
    img = image(step)
    window = tuple(image(1000 + step * 10 + j) for j in range(k)) + (img,) if gate and frames else None
    return FeedbackItem(
        env_id=0,
        step=step,
        wanted=wanted,
        command=4,
        speed=3.0,
        action=np.zeros(2, np.float32),
        image=img if with_image else None,
        frames=window,
        gate=gate,
    )


def model(clip, describer, alpha=1.0, beta=1.0):
    return DriveVlmFeedback(
        clip,
        describer,
        alpha=alpha,
        beta=beta,
        static_positive=POSITIVE,
        static_negative=NEGATIVE,
        dynamic_positive=DYNAMIC,
    )


def cosines(clip, img, texts):
    """Raw cosine similarities of one image with texts, computed independently of the model."""
    e = clip.encode_images(img[None])[0].double()
    t = clip.encode_texts(texts).double()
    return (t @ e).tolist()


class Counting:
    """Counts calls of a bound method (CLIP's encoders) while the model answers."""

    def __init__(self, monkeypatch, obj, name):
        self.calls, original = 0, getattr(obj, name)

        def wrapped(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(obj, name, wrapped)


def scores(results):
    return {r.step: r.values.get("semantic_score") for r in results}


def test_static_pathway_alone_when_no_gate_is_open(tiny_clip):
    describer = Describer()
    m = model(tiny_clip, describer, alpha=1.5, beta=0.5)
    results = m([item(1), item(2)])
    assert describer.calls == []  # no gated item: no VLM call
    for step, score in scores(results).items():
        pos, neg = cosines(tiny_clip, image(step), [POSITIVE, NEGATIVE])
        assert score == pytest.approx(1.5 * pos - 0.5 * neg, abs=1e-5)
    assert m.report()["items"] == 2 and m.report()["vlm_calls"] == 0 and m.report()["gate_rate"] == 0.0
    assert all("vlm_latency_s" not in r.values for r in results)


def test_dynamic_pathway_adds_on_gated_items_in_one_batched_call(tiny_clip, monkeypatch):
    describer = Describer()
    m = model(tiny_clip, describer, alpha=2.0, beta=1.0)
    images = Counting(monkeypatch, tiny_clip, "encode_images")
    texts = Counting(monkeypatch, tiny_clip.model, "encode_text")
    batch = [item(1), item(2, gate=True), item(3), item(4, gate=True)]
    results = m(batch)
    assert images.calls == 1 and texts.calls == 1  # goals were encoded once, at construction
    assert len(describer.calls) == 1  # one VLM call for the batch ...
    windows = describer.calls[0]
    assert len(windows) == 2  # ... with the gated items' windows only, in item order
    for window, gated in zip(windows, (batch[1], batch[3])):
        assert len(window) == 4 and window[-1] is gated.image
    got = scores(results)
    for step in (1, 2, 3, 4):
        pos, neg, dyn, risk = cosines(tiny_clip, image(step), [POSITIVE, NEGATIVE, DYNAMIC, RISK])
        static = 2.0 * pos - 1.0 * neg
        expected = static + (2.0 * dyn - 1.0 * risk if step in (2, 4) else 0.0)
        assert got[step] == pytest.approx(expected, abs=1e-5)
    latencies = {r.step: r.values.get("vlm_latency_s") for r in results}
    assert latencies[1] is None and latencies[3] is None and latencies[2] == latencies[4] >= 0.0
    report = m.report()
    assert report["items"] == 4 and report["gated_items"] == 2 and report["gate_rate"] == 0.5
    assert report["vlm_calls"] == 1 and report["described"] == 2 and report["vlm_latency_s"] >= 0.0


def test_each_batch_makes_its_own_single_vlm_call(tiny_clip):
    describer = Describer()
    m = model(tiny_clip, describer)
    for start in (0, 10, 20):
        m([item(start + j, gate=j % 2 == 0) for j in range(6)])
    assert [len(call) for call in describer.calls] == [3, 3, 3]
    assert m.counters.vlm_calls == 3 and m.counters.gated_items == 9 and m.counters.items == 18


def test_unusable_descriptions_leave_the_score_unavailable(tiny_clip):
    describer = Describer(answer=lambda windows: [RISK, None, "   ", 7][: len(windows)])
    m = model(tiny_clip, describer)
    results = m([item(1, gate=True), item(2, gate=True), item(3, gate=True), item(4, gate=True), item(5)])
    got = scores(results)
    assert got[1] is not None and validate("semantic_score", got[1])[1]
    for step in (2, 3, 4):  # None, blank, not a string: no default stands in
        assert "semantic_score" in {k for r in results if r.step == step for k in r.values}
        assert validate("semantic_score", got[step]) == (None, False)
    assert validate("semantic_score", got[5])[1]  # the ungated item is still answered
    assert m.report()["described"] == 1


@pytest.mark.parametrize("answer", [RuntimeError("VLM engine died"), lambda windows: [RISK]])
def test_a_failed_vlm_call_leaves_gated_items_unavailable_and_the_rest_answered(tiny_clip, answer):
    describer = Describer(answer=answer)  # raises, or answers one text for two windows
    m = model(tiny_clip, describer)
    got = scores(m([item(1, gate=True), item(2), item(3, gate=True)]))
    assert got[1] is None and got[3] is None and validate("semantic_score", got[2])[1]
    assert m.report()["vlm_failures"] == 1


def test_a_gated_item_without_frames_is_unscored_and_costs_no_call(tiny_clip):
    describer = Describer()
    m = model(tiny_clip, describer)
    got = scores(m([item(1, gate=True, frames=False), item(2)]))
    assert got[1] is None and got[2] is not None and describer.calls == []


def test_items_that_do_not_want_the_score_are_left_alone(tiny_clip):
    describer = Describer()
    m = model(tiny_clip, describer)
    results = m([item(1, wanted=("vlm_action",), gate=True), item(2, with_image=False, gate=True)])
    assert [r.values for r in results] == [{}, {}] and describer.calls == []
    assert m([]) == []


def test_the_registry_builds_it_from_the_config(tiny_clip, tmp_path, monkeypatch):
    """CLIP from feedback.clip, the describer as VlmAdvisor(...) from feedback.vlm, the pathways from
    feedback.drivevlm (vLLM is not needed: the advisor class is replaced)."""
    import feedback.vlm_advisor
    from feedback.registry import build_model, model_inputs

    built = {}

    class FakeAdvisor(Describer):
        def __init__(self, vlm_config):
            super().__init__()
            built.update(model=vlm_config.model, max_tokens=vlm_config.max_tokens)

    monkeypatch.setattr(feedback.vlm_advisor, "VlmAdvisor", FakeAdvisor)
    checkpoint = tiny_clip.save(tmp_path / "clip")
    config = load_config(
        None,
        [
            "feedback.model=drivevlm",
            "feedback.wanted=[semantic_score]",
            f"feedback.clip.checkpoint={checkpoint}",
            "feedback.clip.device=cpu",
            "feedback.vlm.model=/models/describer",
            "feedback.drivevlm.alpha=2",
        ],
    ).feedback
    m = build_model(config)
    assert isinstance(m, DriveVlmFeedback) and isinstance(m.describer, FakeAdvisor)
    assert built["model"] == "/models/describer" and built["max_tokens"] == config.vlm.max_tokens
    assert m.alpha == 2.0 and m.beta == 1.0
    assert model_inputs(config) == frozenset({"image"})
    assert m([item(1, gate=True)])[0].values["semantic_score"] is not None


def test_from_config_uses_the_published_prompts(tiny_clip):
    config = dataclasses.replace(DriveVlmConfig(), alpha=0.5)
    m = DriveVlmFeedback.from_config(tiny_clip, Describer(), config)
    expected = model(tiny_clip, Describer(), alpha=0.5)
    assert scores(m([item(7)])) == pytest.approx(scores(expected([item(7)])))
    assert config.static_positive == POSITIVE and config.static_negative == NEGATIVE
    assert config.dynamic_positive == DYNAMIC
