"""The sample-to-insert ratio, both directions, by hand."""

from learners.pacing import SampleToInsertRatio


def test_no_update_before_min_inserts_then_the_ratio():
    ratio = SampleToInsertRatio(samples_per_insert=8, batch_size=64, min_inserts=1000)
    assert ratio.updates_allowed(999, 0) == 0
    assert ratio.updates_allowed(1000, 0) == 8  # 8 * (0 + 64) / 64
    assert ratio.updates_allowed(1064, 0) == 16  # 8 * (64 + 64) / 64
    assert ratio.updates_allowed(1064, 10) == 6
    assert ratio.updates_allowed(1064, 20) == 0  # ahead of the ratio: nothing, never negative


def test_workers_wait_when_too_far_ahead_of_the_learner():
    ratio = SampleToInsertRatio(samples_per_insert=8, batch_size=64, min_inserts=1000, max_insert_lead=100)
    assert ratio.inserts_allowed(500, 0) == 600  # before learning starts the lead counts from min_inserts
    # 16 updates are expected at 1064 inserts; the learner has done 8 (expected at 1000): 64 ahead
    assert ratio.inserts_allowed(1064, 8) == 100 - 64
    assert ratio.inserts_allowed(1200, 8) == 100 - 200  # negative: wait
    assert ratio.inserts_allowed(1200, 16) == 100 - 136
    assert SampleToInsertRatio(8, 64, 1000).inserts_allowed(10**9, 0) is None  # no limit


def test_achieved_ratio():
    ratio = SampleToInsertRatio(samples_per_insert=8, batch_size=64, min_inserts=1000)
    assert ratio.achieved(1064, 16) == 8.0  # keeping up exactly
    assert ratio.achieved(1064, 8) == 4.0  # half the updates the ratio asks for
    assert ratio.achieved(10, 0) == 0.0
