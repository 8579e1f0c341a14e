"""The VLM's fine-tuning examples (fast tier, no transformers): the answer format, the risk
description read from the walker mask, the frame windows and the held-out split, hand-computed."""

import numpy as np
import pytest

from dataset.parquet import DatasetError
from envs.bev import CH_WALKERS, NUM_HISTORY
from envs.spaces import BEV_SHAPE
from feedback.vlm_prompt import build_risk_prompt, format_action, parse_action
from teacher_training.vlm_data import (
    CLEAR,
    RISK_TEMPLATES_CORPUS,
    _held_out,
    _windows,
    build_examples,
    risk_description,
)


def test_format_action_is_what_the_parser_reads_back():
    assert format_action(np.array([0.5, -0.25])) == '{"throttle": 0.50, "steer": -0.25, "brake": 0.00}'
    assert format_action(np.array([-0.8, 0.0])) == '{"throttle": 0.00, "steer": 0.00, "brake": 0.80}'
    assert format_action(np.array([1.7, -3.0])) == '{"throttle": 1.00, "steer": -1.00, "brake": 0.00}'  # clipped
    for action in ([0.3, 0.1], [-0.6, -0.4], [0.0, 0.0]):
        np.testing.assert_allclose(parse_action(format_action(np.array(action))), action, atol=1e-6)


def _bev_with_walker(row: int, col: int) -> np.ndarray:
    bev = np.zeros(BEV_SHAPE, np.uint8)
    bev[CH_WALKERS + NUM_HISTORY - 1, row, col] = 255  # the newest walker channel
    return bev


def test_risk_description_reads_the_newest_walker_mask():
    # 96 px masks at 2.5 px/m with the ego at (col 48, row 76): row 61 is 6 m ahead, col 53 is 2 m right.
    assert (
        risk_description(_bev_with_walker(61, 53))
        == "Danger: a pedestrian is 6 metres ahead on the right of the ego's path."
    )
    # 20 px ahead = 8 m (no longer "Danger"), 1.2 m left of the heading: on the left.
    assert risk_description(_bev_with_walker(56, 45)) == "A pedestrian is 8 metres ahead on the left of the ego's path."
    assert risk_description(_bev_with_walker(66, 48)) == "Danger: a pedestrian is 4 metres ahead in the ego's path."
    # 4 m to the side (outside the 3 m corridor), 25 m ahead (outside 20 m), or an older frame only: clear
    assert risk_description(_bev_with_walker(66, 58)) == CLEAR
    assert risk_description(_bev_with_walker(13, 48)) == CLEAR
    old = np.zeros(BEV_SHAPE, np.uint8)
    old[CH_WALKERS, 66, 48] = 255
    assert risk_description(old) == CLEAR


def test_the_nearest_walker_is_described_and_every_text_is_in_the_corpus():
    bev = _bev_with_walker(41, 50)  # 14 m ahead
    bev[CH_WALKERS + NUM_HISTORY - 1, 71, 46] = 255  # 2 m ahead, 0.8 m left: nearer
    text = risk_description(bev)
    assert text == "Danger: a pedestrian is 2 metres ahead in the ego's path." and text in RISK_TEMPLATES_CORPUS
    assert CLEAR in RISK_TEMPLATES_CORPUS and "3 bird's-eye views" in build_risk_prompt(3)


def test_windows_pad_with_the_episode_first_frame_and_skip_last_rows():
    chunk = {
        "step": np.arange(6),
        "is_first": np.array([1, 0, 0, 1, 0, 0], bool),
        "is_last": np.array([0, 0, 1, 0, 0, 1], bool),
    }
    assert list(_windows(chunk, 3)) == [(0, (0, 0, 0)), (1, (0, 0, 1)), (3, (3, 3, 3)), (4, (3, 3, 4))]


def test_held_out_blocks():
    assert [_held_out(s) for s in (0, 699, 700, 799, 800, 1500, 1599)] == [False, False, True, True, False, True, True]


def test_a_dataset_without_the_prompt_columns_is_refused(tmp_path):
    from dataset.parquet import ParquetSink, create_dataset
    from learners.replay import empty_chunk

    directory = create_dataset(tmp_path / "old", {"collector": "test"})
    chunk = empty_chunk(4)
    chunk["is_first"][0], chunk["is_last"][3] = True, True
    chunk["step"][:] = np.arange(4)
    sink = ParquetSink(directory, stream_id=0, rows_per_shard=4)
    sink.write(chunk)
    sink.close()
    with pytest.raises(DatasetError, match="rgb_bev, command, forward.*configs/collect/vlm.yaml"):
        build_examples(directory)


def test_agreement_metrics_by_hand():
    from teacher_training.vlm_finetune import action_metrics, agreement_metrics

    targets = [np.array([0.5, 0.0]), np.array([-1.0, 0.2]), np.array([0.0, 0.0]), np.array([0.3, -0.1])]
    actions = [np.array([0.6, 0.05]), np.array([-0.5, 0.2]), None, np.array([0.3, -0.3])]
    m = agreement_metrics(actions, targets)
    # errors: (0.1, 0.05) agrees; (0.5, 0) too far in acc; unparsed; (0, 0.2) too far in steer
    assert m["parse_rate"] == 0.75 and m["agreement"] == 0.25
    assert m["mae_acc"] == pytest.approx(0.2) and m["mae_steer"] == pytest.approx(0.25 / 3)
    texts = ['{"throttle": 0.6, "steer": 0.05, "brake": 0}', "brake!", None]
    assert action_metrics(texts, targets[:3])["parse_rate"] == pytest.approx(1 / 3)
