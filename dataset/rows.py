"""The transition row: one layout for the replay, the chunks workers ship, the journal and the
Parquet datasets (docs/architecture.md §2). Everything that stores rows takes it from here."""

from __future__ import annotations

import numpy as np

from envs.spaces import ACTION_SIZE, BEV_SHAPE, STATE_SIZE

# Single source of truth for the row layout (replay, chunks, datasets): key -> (shape without the
# leading dim, dtype).
ROW_SPEC: dict[str, tuple[tuple[int, ...], np.dtype]] = {
    "bev": (BEV_SHAPE, np.dtype(np.uint8)),
    "state": ((STATE_SIZE,), np.dtype(np.float32)),
    "action": ((ACTION_SIZE,), np.dtype(np.float32)),
    "reward": ((), np.dtype(np.float32)),
    "cost": ((), np.dtype(np.float32)),
    "terminated": ((), np.dtype(np.bool_)),
    "truncated": ((), np.dtype(np.bool_)),
    "is_first": ((), np.dtype(np.bool_)),
    "is_last": ((), np.dtype(np.bool_)),
    "clip_margin": ((), np.dtype(np.float32)),
    "clip_margin_mask": ((), np.dtype(np.float32)),
    "safety": ((), np.dtype(np.float32)),
    "safety_mask": ((), np.dtype(np.float32)),
    "vlm_action": ((ACTION_SIZE,), np.dtype(np.float32)),
    "vlm_action_mask": ((), np.dtype(np.float32)),
    # The privileged expert's action at this observation (a label for BC and datasets), where the
    # worker could compute it (workers.record_expert_action; mask 0 otherwise and on is_last rows).
    "expert_action": ((ACTION_SIZE,), np.dtype(np.float32)),
    "expert_action_mask": ((), np.dtype(np.float32)),
    "policy_version": ((), np.dtype(np.int64)),
    "episode_id": ((), np.dtype(np.int64)),
    "stream_id": ((), np.dtype(np.int64)),
    "step": ((), np.dtype(np.int64)),
}
FEEDBACK_KEYS: tuple[str, ...] = (
    "clip_margin",
    "clip_margin_mask",
    "safety",
    "safety_mask",
    "vlm_action",
    "vlm_action_mask",
    "expert_action",
    "expert_action_mask",
)
MASK_KEYS: tuple[str, ...] = tuple(key for key in FEEDBACK_KEYS if key.endswith("_mask"))
BEV_KEY = "bev"  # stored compressed, apart from the fixed-size fields
ARRAY_KEYS: tuple[str, ...] = tuple(key for key in ROW_SPEC if key != BEV_KEY)
