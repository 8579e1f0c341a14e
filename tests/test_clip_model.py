"""open_clip loading, offline failure, checkpoints and the CLIP feedback model on a real (tiny,
randomly initialised) open_clip model."""

import time

import numpy as np
import pytest
import torch

from configs.schema import SAFE_PROMPTS, UNSAFE_PROMPTS
from core.feedback import FeedbackItem, validate
from feedback.clip_feedback import ClipFeedback, context_logits
from feedback.clip_model import ClipModel, ClipSource, ClipUnavailableError
from feedback.clip_prompts import action_index, alignment_margin, context_index, prompt_library
from feedback.open_clip_import import import_open_clip


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return ClipModel.load(ClipSource("MentorCLIP-Tiny"))


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 192, 192, 3), dtype=np.uint8)


def test_missing_pretrained_weights_fail_fast_offline(monkeypatch, tmp_path):
    import_open_clip()  # the import itself is not what must be fast
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    started = time.monotonic()
    with pytest.raises(ClipUnavailableError, match="HF_HUB_OFFLINE") as err:
        ClipModel.load(ClipSource("ViT-B-16", "laion2b_s34b_b88k"))
    assert time.monotonic() - started < 0.5
    assert "feedback.clip.checkpoint" in str(err.value)


@pytest.mark.parametrize(
    "source, message",
    [
        (ClipSource("ViT-B-16", "no_such_tag"), "laion2b_s34b_b88k"),  # lists the real tags
        (ClipSource("NoSuchArch"), "unknown CLIP architecture"),
        (ClipSource(checkpoint="/nonexistent/clip"), "python -m teacher_training.clip_training"),
        (ClipSource("ViT-B-16", "/nonexistent/weights.pt"), "not found"),
    ],
)
def test_bad_sources_say_what_to_do(source, message):
    with pytest.raises(ClipUnavailableError, match=message):
        ClipModel.load(source)


def test_checkpoint_round_trip_gives_the_same_embeddings(tiny_clip, tmp_path):
    tiny_clip.save(tmp_path / "ck", extra={"note": "test"})
    loaded = ClipModel.load(ClipSource(checkpoint=str(tmp_path / "ck")))
    batch = images(3)
    torch.testing.assert_close(loaded.encode_images(batch), tiny_clip.encode_images(batch))
    prompts = tuple(prompt_library()[:5])
    torch.testing.assert_close(loaded.text_embeddings(prompts), tiny_clip.text_embeddings(prompts))
    assert loaded.arch == "MentorCLIP-Tiny" and loaded.logit_scale == pytest.approx(tiny_clip.logit_scale)


def test_text_embeddings_are_computed_once_and_unit_norm(tiny_clip):
    prompts = tuple(prompt_library())
    first = tiny_clip.text_embeddings(prompts)
    assert first.shape[0] == 720 and tiny_clip.text_embeddings(prompts) is first
    torch.testing.assert_close(first.norm(dim=1), torch.ones(720))


def test_preprocess_resizes_to_the_model_input(tiny_clip):
    x = tiny_clip.preprocess(images(2)[:, :96, :96])
    assert tuple(x.shape) == (2, 3, 192, 192) and x.dtype == torch.float32


def item(step, wanted=("clip_margin", "safety"), image=True, command=4, speed=3.0, action=(0.5, 0.1)):
    return FeedbackItem(
        0, step, wanted, command, speed, np.array(action, np.float32), image=images(1, seed=step)[0] if image else None
    )


def test_clip_feedback_matches_the_margin_computed_by_hand(tiny_clip):
    model = ClipFeedback(tiny_clip, SAFE_PROMPTS, UNSAFE_PROMPTS)
    batch = [item(0, command=1, speed=0.0, action=(-0.8, 0.0)), item(1, command=4, speed=5.0, action=(0.9, 0.5))]
    results = model(batch)
    emb = tiny_clip.encode_images(np.stack([i.image for i in batch]))
    library = tiny_clip.text_embeddings(tuple(prompt_library()))
    rows = [library[30 * context_index(i.command, i.speed) :][:30] for i in batch]
    logits = np.stack([tiny_clip.logit_scale * (emb[k] @ rows[k].T).numpy() for k in range(len(batch))])
    expected = alignment_margin(logits, np.array([action_index(i.action) for i in batch]))
    np.testing.assert_allclose([r.values["clip_margin"] for r in results], expected, atol=1e-5)
    np.testing.assert_allclose(
        context_logits(library, tiny_clip.logit_scale, emb, [context_index(i.command, i.speed) for i in batch]),
        logits,
        rtol=1e-5,
    )
    for r in results:
        assert validate("clip_margin", r.values["clip_margin"])[1] and validate("safety", r.values["safety"])[1]


def test_clip_feedback_answers_only_what_is_wanted_and_keeps_keys(tiny_clip):
    model = ClipFeedback(tiny_clip, SAFE_PROMPTS, UNSAFE_PROMPTS, max_batch=2)
    batch = [item(5, wanted=("safety",)), item(6, image=False), item(7, wanted=("vlm_action",)), item(8), item(9)]
    results = model(batch)
    assert [r.key for r in results] == [i.key for i in batch]
    assert set(results[0].values) == {"safety"} and results[1].values == {} and results[2].values == {}
    assert set(results[3].values) == {"clip_margin", "safety"}
    # safety = softmax mass of the safe prompts
    goals = tiny_clip.text_embeddings(SAFE_PROMPTS + UNSAFE_PROMPTS)
    probs = torch.softmax(tiny_clip.logit_scale * tiny_clip.encode_images(batch[4].image[None]) @ goals.T, dim=1)
    assert results[4].values["safety"] == pytest.approx(float(probs[0, : len(SAFE_PROMPTS)].sum()), abs=1e-5)


def test_clip_feedback_needs_both_goal_sets(tiny_clip):
    with pytest.raises(ValueError, match="unsafe_prompts"):
        ClipFeedback(tiny_clip, SAFE_PROMPTS, ())
