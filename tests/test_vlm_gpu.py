"""The VLM advisor on a real vLLM engine (GPU only; deselected by default).

Run inside the VLM runtime_env on a GPU machine with the model given by $MENTOR_VLM_MODEL
(a local path, or a hub id that is cached or downloadable):
    MENTOR_VLM_MODEL=OpenGVLab/InternVL3-1B MENTOR_VLM_TRUST_REMOTE_CODE=1 \
        python -m pytest -q -m gpu tests/test_vlm_gpu.py
    MENTOR_VLM_BASE=/models/Qwen2.5-VL-3B-Instruct MENTOR_VLM_DATASET=data/vlm-town01 \
        python -m pytest -q -m gpu -k lora tests/test_vlm_gpu.py
"""

import os

import numpy as np
import pytest

from configs.schema import VlmConfig
from core.feedback import FeedbackItem, validate

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def model() -> str:
    pytest.importorskip("vllm", reason="vLLM is not installed in this environment")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    name = os.environ.get("MENTOR_VLM_MODEL")
    if not name:
        pytest.skip("set $MENTOR_VLM_MODEL to a VLM path or hub id")
    return name


def _bev(rng: np.random.Generator) -> np.ndarray:
    """A BEV-like image: black background, a grey road band, a route, a few blue boxes, the ego."""
    img = np.zeros((192, 192, 3), dtype=np.uint8)
    img[:, 72:120] = (46, 52, 54)
    img[:, 88:104] = (136, 138, 133)
    for _ in range(rng.integers(0, 4)):
        x, y = rng.integers(72, 110), rng.integers(0, 130)
        img[y : y + 20, x : x + 9] = (0, 0, 255)
    img[142:152, 92:100] = (255, 255, 255)
    return img


def test_batch_of_eight(model):
    from feedback.vlm_advisor import VlmAdvisor

    # InternVL3 runs its own code: the tester opts in with MENTOR_VLM_TRUST_REMOTE_CODE=1.
    advisor = VlmAdvisor(
        VlmConfig(
            model=model,
            gpu_memory_utilization=0.4,
            trust_remote_code=os.environ.get("MENTOR_VLM_TRUST_REMOTE_CODE") == "1",
        )
    )
    calls = []
    generate = advisor._llm.generate

    def counting_generate(requests, sampling_params, **kwargs):
        calls.append(len(requests))
        return generate(requests, sampling_params, **kwargs)

    advisor._llm.generate = counting_generate  # count engine calls without changing them
    rng = np.random.default_rng(0)
    items = [
        FeedbackItem(
            env_id=i % 4,
            step=i,
            wanted=("vlm_action",),
            command=int(rng.integers(1, 7)),
            speed=float(rng.uniform(0, 8)),
            action=np.zeros(2, np.float32),
            image=_bev(rng),
            forward=(float(np.cos(i)), float(np.sin(i))),
        )
        for i in range(8)
    ]
    results = advisor(items)
    assert calls == [8]
    assert [r.key for r in results] == [i.key for i in items]
    # Every item gets an answer: a valid action, or the raw malformed text (the worker masks it).
    answered = sum(validate("vlm_action", r.values["vlm_action"])[1] for r in results)
    assert advisor.counters() == {"requested": 8, "answered": answered, "malformed": 8 - answered}


def test_lora_finetuning_on_a_local_checkpoint(tmp_path):
    """Found-RL's fine-tuning on the GPU tier: a local Hugging Face VLM ($MENTOR_VLM_BASE, e.g.
    Qwen2.5-VL-3B-Instruct) and a dataset with rgb_bev/command/forward ($MENTOR_VLM_DATASET), LoRA,
    a few steps, merged and saved so that vLLM can load it."""
    pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    base, dataset = os.environ.get("MENTOR_VLM_BASE"), os.environ.get("MENTOR_VLM_DATASET")
    if not torch.cuda.is_available() or not base or not dataset:
        pytest.skip("needs a CUDA GPU, $MENTOR_VLM_BASE (a local VLM) and $MENTOR_VLM_DATASET")
    from teacher_training.vlm_finetune import FinetuneSettings, finetune

    settings = FinetuneSettings(
        steps=10, batch_size=4, lr=2e-5, warmup_steps=2, eval_every=10, eval_examples=8, lora_rank=16, dtype="bfloat16"
    )
    report = finetune(base, dataset, tmp_path / "tuned", settings)
    assert (tmp_path / "tuned" / "config.json").is_file() and report["final"]["step"] == 10
