"""Pending transitions: out-of-order answers, deadlines, malformed answers, per-stream order."""

import numpy as np

from core.feedback import FeedbackResult
from workers.pending import PendingTransitions


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make(deadline=1.0):
    clock = Clock()
    return PendingTransitions(deadline, clock=clock), clock


def add(pending, stream, step, wanted=("vlm_action",)):
    pending.add(stream, step, {"step": step, "stream": stream, "vlm_action": np.zeros(2, np.float32)}, wanted)
    pending.complete_env(stream, step, reward=1.0)


def test_out_of_order_answers_land_on_the_right_rows_and_ship_in_step_order():
    pending, _ = make()
    for step in range(3):
        add(pending, stream=7, step=step)
    pending.attach(FeedbackResult(7, 2, {"vlm_action": [0.2, 0.0]}))
    assert pending.pop_ready() == []  # step 0 still waits: nothing overtakes it
    pending.attach(FeedbackResult(7, 0, {"vlm_action": [0.0, 0.1]}))
    pending.attach(FeedbackResult(7, 1, {"vlm_action": [0.1, 0.0]}))
    rows = pending.pop_ready()
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert [r["vlm_action"].tolist() for r in rows] == [
        [0.0, np.float32(0.1)],
        [np.float32(0.1), 0.0],
        [np.float32(0.2), 0.0],
    ]
    assert all(r["vlm_action_mask"] == 1.0 for r in rows)


def test_streams_are_independent():
    pending, _ = make()
    add(pending, 1, 0)
    add(pending, 2, 0)
    pending.attach(FeedbackResult(2, 0, {"vlm_action": [0.0, 0.0]}))
    assert [r["stream"] for r in pending.pop_ready()] == [2]


def test_deadline_ships_with_mask_zero_and_keeps_the_value_untouched():
    pending, clock = make(deadline=1.0)
    add(pending, 1, 0)
    clock.now = 0.5
    assert pending.pop_ready() == []
    clock.now = 1.01
    (row,) = pending.pop_ready()
    assert row["vlm_action_mask"] == 0.0 and pending.counters.expired == 1
    pending.attach(FeedbackResult(1, 0, {"vlm_action": [0.5, 0.5]}))  # too late
    assert pending.counters.late == 1


def test_malformed_answers_are_unavailable_not_defaulted():
    pending, _ = make()
    for step, bad in enumerate([[np.nan, 0.0], [0.1, 0.2, 0.3], [2.0, 0.0], "turn left"]):
        add(pending, 1, step)
        pending.attach(FeedbackResult(1, step, {"vlm_action": bad}))
    add(pending, 1, 4)
    pending.attach(FeedbackResult(1, 4, {}))  # answered nothing it was asked
    rows = pending.pop_ready()
    assert len(rows) == 5 and all(r["vlm_action_mask"] == 0.0 for r in rows)
    assert all(np.array_equal(r["vlm_action"], np.zeros(2)) for r in rows)
    assert pending.counters.malformed == 5


def test_rows_wait_for_the_env_outcome():
    pending, _ = make()
    pending.add(1, 0, {"step": 0}, ("vlm_action",))
    pending.attach(FeedbackResult(1, 0, {"vlm_action": [0.0, 0.0]}))
    assert pending.pop_ready() == []
    pending.complete_env(1, 0, reward=0.5)
    assert pending.pop_ready()[0]["reward"] == 0.5


def test_oldest_age():
    pending, clock = make(deadline=10)
    add(pending, 1, 0)
    clock.now = 3.0
    add(pending, 2, 0)
    assert pending.oldest_age() == 3.0
