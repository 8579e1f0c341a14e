"""The VLM prompt, the strict answer parser and the VLM advisor with a fake engine (CPU, no vLLM)."""

import time
from types import SimpleNamespace

import numpy as np
import pytest

from configs.schema import VlmConfig
from core.feedback import FeedbackItem, validate
from envs.types import RouteCommand
from feedback.vlm_advisor import VlmAdvisor
from feedback.vlm_prompt import _unfence, build_prompt, parse_action

# --- parse_action: accepted answers ---


def test_plain_json():
    action = parse_action('{"throttle": 0.6, "steer": -0.2, "brake": 0.0}')
    np.testing.assert_allclose(action, [0.6, -0.2], rtol=1e-6)


def test_fenced_json_and_plain_fence():
    for text in (
        '```json\n{"throttle": 0.5, "steer": 0.1, "brake": 0}\n```',
        '  ```\n{"throttle": 0.5, "steer": 0.1, "brake": 0}\n```\n',
    ):
        np.testing.assert_allclose(parse_action(text), [0.5, 0.1], rtol=1e-6)


def test_surrounding_whitespace_and_integers():
    np.testing.assert_allclose(parse_action('\n {"throttle": 1, "steer": 0, "brake": 0} \n'), [1.0, 0.0])


def test_brake_wins_over_throttle():
    np.testing.assert_allclose(parse_action('{"throttle": 0.7, "steer": 0.0, "brake": 0.8}'), [-0.8, 0.0])


def test_small_brake_gives_throttle():
    np.testing.assert_allclose(parse_action('{"throttle": 0.4, "steer": 0.3, "brake": 0.05}'), [0.4, 0.3], rtol=1e-6)


def test_float32_shape_and_valid():
    action = parse_action('{"throttle": 0.3, "steer": 1.0, "brake": 0.0}')
    assert action.dtype == np.float32 and action.shape == (2,)
    assert validate("vlm_action", action)[1]


# --- parse_action: rejected answers ---

REJECTED = [
    '{"throttle": 0.5, "steer": 0.0, "brake": 0.0, "reason": 1}',  # extra key
    '{"throttle": 0.5, "steer": 0.0}',  # missing key
    '{"throttle": "0.5", "steer": 0.0, "brake": 0.0}',  # string number
    '{"throttle": true, "steer": 0.0, "brake": 0.0}',  # bool
    '{"throttle": NaN, "steer": 0.0, "brake": 0.0}',
    '{"throttle": 0.5, "steer": Infinity, "brake": 0.0}',
    '{"throttle": 0.5, "steer": -Infinity, "brake": 0.0}',
    '{"throttle": 1e999, "steer": 0.0, "brake": 0.0}',  # overflows to inf
    '{"throttle": 1.2, "steer": 0.0, "brake": 0.0}',  # out of range
    '{"throttle": 0.5, "steer": -1.5, "brake": 0.0}',
    '{"throttle": 0.5, "steer": 0.0, "brake": -0.1}',
    '{"throttle": 0.5, "steer": 0.0, "brake": null}',
    '{"throttle": 0.5, "throttle": 0.5, "steer": 0.0, "brake": 0.0}',  # duplicate key
    '{"throttle": 0.5, "steer": 0.0, "brake": 0.0} I will accelerate.',  # trailing prose
    'Sure! {"throttle": 0.5, "steer": 0.0, "brake": 0.0}',  # leading prose
    '{"throttle": 0.5, "steer": 0.0, "brake": 0.0}{"throttle": 0.5, "steer": 0.0, "brake": 0.0}',
    "[0.5, 0.0, 0.0]",
    '[{"throttle": 0.5, "steer": 0.0, "brake": 0.0}]',
    "",
    "   ",
    "accelerate gently and keep the lane",
    '```json\n{"throttle": 0.5, "steer": 0.0, "brake": 0.0}\n``` done',  # prose after the fence
    '```json\n{"throttle": 0.5, "steer": 0.0, "brake": 0.0}',  # unclosed fence
    '```python\n{"throttle": 0.5, "steer": 0.0, "brake": 0.0}\n```',  # wrong fence language
    '{"throttle": 0.5, "steer": 0.0, "brake": 1' + "0" * 400 + "}",  # huge integer
]


@pytest.mark.parametrize("text", REJECTED)
def test_rejects(text):
    assert parse_action(text) is None


def test_rejects_non_string():
    for value in (None, [0.5, 0.1], (0.5, 0.1), np.array([0.5, 0.1]), b'{"throttle": 0.5}'):
        assert parse_action(value) is None  # type: ignore[arg-type]


# Within MAX_ANSWER_CHARS, so that the parser really reads them (longer texts are refused unread).
HOSTILE = [
    "```" + "\t" * 2000,  # took 7.6 s with the fence regex
    "```json\n" + " " * 4000,
    "```" + " \t" * 2000 + "x",
    "```json\n" + '{"throttle": 0.5, "steer": 0.0, "brake": 0.0}' + " \t\n" * 1300,
    "`" * 4000,
    "{" * 4000,  # nesting: json would recurse
    "```json\n" + " " * 200_000,  # never finished with the regex; refused unread now
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_is_rejected_at_once(text):
    started = time.perf_counter()
    assert parse_action(text) is None
    # Generous: a linear parse of 4k characters takes well under a millisecond here; the old
    # regex took seconds on the first one. This bounds a pathology, not a benchmark.
    assert time.perf_counter() - started < 0.5


def test_unfencing_time_grows_linearly():
    """Eight times the blanks cost about eight times as much (the regex grew quadratically); the
    best of several repeats, so a busy machine does not decide it."""

    def cost(n):
        text = "```json\n" + "\t" * n + "x"
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(20):
                _unfence(text)
            best = min(best, time.perf_counter() - started)
        return best

    small, large = cost(50_000), cost(400_000)
    assert large < 8 * 4 * small  # linear: about 8x; quadratic would be 64x


def test_fence_edges():
    assert _unfence("```") is None and _unfence("````") is None and _unfence("``````") == ""
    assert _unfence("```JSON{}```") == "{}" and _unfence("  {}  ") == "{}"
    np.testing.assert_allclose(
        parse_action('```json{"throttle": 0.5, "steer": 0.1, "brake": 0}```'), [0.5, 0.1], rtol=1e-6
    )


# --- build_prompt ---


def test_prompt_contents():
    prompt = build_prompt(3.14159, (0.7071, -0.7071), int(RouteCommand.LEFT))
    assert "3.14 m/s" in prompt
    assert "(0.71, -0.71)" in prompt
    assert RouteCommand.LEFT.phrase in prompt
    for key in ('"throttle"', '"steer"', '"brake"'):
        assert key in prompt
    assert "JSON" in prompt and "bird's-eye view" in prompt


def test_prompt_deterministic_and_without_forward():
    a = build_prompt(0.0, None, 4)
    assert a == build_prompt(0.0, None, 4)
    assert "0.00 m/s" in a and "unknown" in a and RouteCommand.LANE_FOLLOW.phrase in a
    assert "-0.00" not in build_prompt(0.0, (-0.0001, 1.0), 4)


# --- VlmAdvisor with a fake engine ---


class FakeTokenizer:
    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        text = messages[0]["content"][1]["text"]
        return f"<|user|><image>{text}<|assistant|>"


class FakeEngine:
    """Answers each request with the next scripted text and records the calls."""

    def __init__(self, answers, tokenizer=None):
        self.answers, self.tokenizer, self.calls = list(answers), tokenizer, []

    def get_tokenizer(self):
        if self.tokenizer is None:
            raise RuntimeError("no tokenizer")
        return self.tokenizer

    def generate(self, requests, sampling_params, use_tqdm=True):
        self.calls.append((requests, sampling_params))
        texts = [self.answers.pop(0) for _ in requests]
        return [SimpleNamespace(outputs=[SimpleNamespace(text=t)]) for t in texts]


GOOD = '{"throttle": 0.5, "steer": 0.1, "brake": 0.0}'


def _item(step, image=True, wanted=("vlm_action",)):
    img = np.full((192, 192, 3), step % 255, dtype=np.uint8) if image else None
    return FeedbackItem(
        env_id=step % 3,
        step=step,
        wanted=wanted,
        command=4,
        speed=2.0,
        action=np.zeros(2, np.float32),
        image=img,
        forward=(1.0, 0.0),
    )


def test_one_generate_call_per_batch():
    engine = FakeEngine([GOOD] * 4, FakeTokenizer())
    advisor = VlmAdvisor(VlmConfig(model="fake"), llm=engine)
    items = [_item(s) for s in range(4)]
    results = advisor(items)
    assert len(engine.calls) == 1
    requests, sampling = engine.calls[0]
    assert len(requests) == 4
    assert requests[0]["prompt"].startswith("<|user|><image>")
    assert requests[0]["multi_modal_data"]["image"].size == (192, 192)
    assert sampling is not None
    assert [r.key for r in results] == [i.key for i in items]
    for r in results:
        np.testing.assert_allclose(r.values["vlm_action"], [0.5, 0.1], rtol=1e-6)
    assert advisor.counters() == {"requested": 4, "answered": 4, "malformed": 0}


def test_plain_prompt_without_tokenizer():
    engine = FakeEngine([GOOD])
    VlmAdvisor(VlmConfig(model="fake"), llm=engine)([_item(0)])
    assert engine.calls[0][0][0]["prompt"].startswith("<image>\n")


def test_malformed_answers_are_unavailable():
    engine = FakeEngine([GOOD, "I would brake.", '{"throttle": NaN, "steer": 0, "brake": 0}'])
    advisor = VlmAdvisor(VlmConfig(model="fake"), llm=engine)
    results = advisor([_item(s) for s in range(3)])
    assert validate("vlm_action", results[0].values["vlm_action"])[1]
    # An explicit None is handed on, so the worker counts it malformed (mask 0) at once.
    assert results[1].values == {"vlm_action": None} and results[2].values == {"vlm_action": None}
    assert not validate("vlm_action", results[1].values["vlm_action"])[1]
    assert advisor.malformed == 2 and advisor.answered == 1 and advisor.requested == 3


def test_non_string_engine_answers_are_unavailable():
    """An engine answering a list, tuple or array (not text) gives no action: the value handed on
    is None, which the worker's validation cannot mistake for an available action."""
    engine = FakeEngine([[0.5, 0.1], (0.5, 0.1), np.array([0.5, 0.1], np.float32)])
    advisor = VlmAdvisor(VlmConfig(model="fake"), llm=engine)
    results = advisor([_item(s) for s in range(3)])
    for r in results:
        assert r.values == {"vlm_action": None}
        assert validate("vlm_action", r.values["vlm_action"]) == (None, False)
    assert advisor.counters() == {"requested": 3, "answered": 0, "malformed": 3}


def test_items_without_image_or_not_wanting_are_not_sent():
    engine = FakeEngine([GOOD, '{"throttle": 0.0, "steer": 0.0, "brake": 1.0}'])
    advisor = VlmAdvisor(VlmConfig(model="fake"), llm=engine)
    items = [_item(0, image=False), _item(1), _item(2, wanted=("clip_margin",)), _item(3)]
    results = advisor(items)
    assert len(engine.calls) == 1 and len(engine.calls[0][0]) == 2
    assert [r.key for r in results] == [i.key for i in items]
    assert results[0].values == {} and results[2].values == {}
    np.testing.assert_allclose(results[1].values["vlm_action"], [0.5, 0.1], rtol=1e-6)
    np.testing.assert_allclose(results[3].values["vlm_action"], [-1.0, 0.0])
    assert advisor.counters() == {"requested": 2, "answered": 2, "malformed": 0}


def test_no_generate_call_without_requests():
    engine = FakeEngine([])
    results = VlmAdvisor(VlmConfig(model="fake"), llm=engine)([_item(0, image=False)])
    assert engine.calls == [] and results[0].values == {}


def test_generate_errors_propagate():
    class Broken(FakeEngine):
        def generate(self, requests, sampling_params, use_tqdm=True):
            raise RuntimeError("engine died")

    with pytest.raises(RuntimeError, match="engine died"):
        VlmAdvisor(VlmConfig(model="fake"), llm=Broken([]))([_item(0)])


def test_missing_local_model_path(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        VlmAdvisor(VlmConfig(model=missing))


def test_offline_uncached_hub_id_fails_fast(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE") as err:
        VlmAdvisor(VlmConfig(model="OpenGVLab/InternVL3-1B"))
    assert time.perf_counter() - start < 1.0
    assert "OpenGVLab/InternVL3-1B" in str(err.value) and "local path" in str(err.value)


def test_offline_cached_hub_id_passes_the_check(monkeypatch, tmp_path):
    """A cached model gets past the offline check (and here fails only for lack of vLLM)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    snapshot = tmp_path / "hub" / "models--OpenGVLab--InternVL3-1B" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="bootstrap_vlm.sh"):
            VlmAdvisor(VlmConfig(model="OpenGVLab/InternVL3-1B"))
    else:
        pytest.skip("vLLM is installed here; building a real engine is the GPU test's job")
