"""core.feedback.validate, the one rule for every feedback field: a finite real of the field's
documented range (vlm_action: two of them in [-1, 1]), else unavailable (the worker counts it as
malformed); it never raises, whatever a model answers."""

import numpy as np
import pytest

from core.feedback import FLOAT32_MAX, SCALAR_RANGES, validate


@pytest.mark.parametrize(
    "name, value",
    [
        ("clip_margin", 0.0),
        ("clip_margin", 1.0),
        ("clip_margin", np.float32(0.25)),
        ("clip_margin", 1),
        ("safety", 0.5),
        ("safety", np.float64(1.0)),
        ("semantic_score", -0.03),
        ("semantic_score", 7),
        ("semantic_score", -1e30),
    ],
)
def test_finite_reals_in_range_are_answers(name, value):
    assert validate(name, value) == (float(value), True)


@pytest.mark.parametrize(
    "name, value",
    [
        ("clip_margin", "0.5"),
        ("clip_margin", "1_0"),
        ("clip_margin", b"0.5"),
        ("clip_margin", True),
        ("clip_margin", np.array(0.5)),
        ("clip_margin", 1.5),
        ("clip_margin", -0.1),
        ("clip_margin", 1e6),
        ("clip_margin", float("nan")),
        ("clip_margin", None),
        ("clip_margin", [0.5]),
        ("safety", "1"),
        ("safety", np.bool_(True)),
        ("safety", 1.0001),
        ("safety", float("inf")),
        ("semantic_score", 10**400),
        ("semantic_score", 1e39),
        ("semantic_score", -1e39),
        ("semantic_score", "3"),
        ("semantic_score", complex(1, 0)),
        ("unknown_field", 0.5),
    ],
)
def test_anything_else_is_unavailable_and_nothing_raises(name, value):
    assert validate(name, value) == (None, False)


def test_a_huge_integer_does_not_raise():
    """float(10**400) raises OverflowError; a worker must not stop on a model's answer."""
    assert validate("safety", 10**400) == (None, False)
    assert validate("vlm_action", [10**400, 0.0]) == (None, False)


@pytest.mark.parametrize("value", [[0.5, -1.0], (1, 0), np.array([0.1, 0.2], np.float64), np.array([1, -1], np.int64)])
def test_vlm_actions_of_two_reals_in_range_are_answers(value):
    action, ok = validate("vlm_action", value)
    assert ok and action.dtype == np.float32 and action.shape == (2,)
    np.testing.assert_array_equal(action, np.asarray(value, dtype=np.float32))


@pytest.mark.parametrize(
    "value",
    [
        ["0.5", "0.1"],
        [True, False],
        np.array([True, False]),
        np.array(["0.1", "0.2"]),
        [0.5],
        [0.5, 0.1, 0.0],
        [1.5, 0.0],
        [0.0, float("nan")],
        np.array([[0.1, 0.2]]),
        "0.1,0.2",
        {"acc": 0.1},
        0.5,
        None,
        np.array([0.1, 0.2], dtype=object),
    ],
)
def test_malformed_vlm_actions_are_unavailable(value):
    assert validate("vlm_action", value) == (None, False)


def test_the_documented_ranges():
    assert SCALAR_RANGES["clip_margin"] == (0.0, 1.0) and SCALAR_RANGES["safety"] == (0.0, 1.0)
    assert SCALAR_RANGES["semantic_score"] == (-FLOAT32_MAX, FLOAT32_MAX)
    assert np.isfinite(np.float32(validate("semantic_score", FLOAT32_MAX)[0]))  # fits the float32 chunk
