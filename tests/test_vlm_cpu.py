"""The VLM for real on a CPU (the `vlm` tier, in .venv-vlm: scripts/test.sh vlm): a small Qwen2-VL
built locally, fine-tuned on expert data the simulator collects, then served by a real vLLM engine,
directly and through the feedback deployment inside train.py on a local Ray cluster."""

import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.vlm
pytest.importorskip("transformers", reason="the vlm tier runs in .venv-vlm (scripts/bootstrap_vlm.sh)")
pytest.importorskip("vllm", reason="the vlm tier runs in .venv-vlm (scripts/bootstrap_vlm.sh)")

import collect  # noqa: E402
import train  # noqa: E402
from configs.schema import VlmConfig  # noqa: E402
from core.feedback import FeedbackItem, validate  # noqa: E402
from teacher_training.vlm_data import CLEAR, build_examples  # noqa: E402

STEPS = int(os.environ.get("MENTOR_VLM_TEST_STEPS", 300))  # fine-tuning: enough for the answer format (~3 min)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("data") / "vlm"
    assert (
        collect.main(
            [
                "--config",
                "configs/collect/vlm.yaml",
                "env.town=Generated",
                "run.total_env_steps=1200",
                f"collect.output={directory}",
                "collect.rows_per_shard=256",
            ]
        )
        == 0
    )
    return directory


@pytest.fixture(scope="module")
def finetuned(dataset_dir, tmp_path_factory):
    from teacher_training.vlm_build import build
    from teacher_training.vlm_finetune import FinetuneSettings, finetune

    root = tmp_path_factory.mktemp("vlm")
    base = build(root / "base")
    settings = FinetuneSettings(steps=STEPS, batch_size=16, eval_every=STEPS // 2, eval_examples=48, log_every=50)
    report = finetune(base, dataset_dir, root / "tuned", settings)
    return root / "tuned", report


def test_finetuning_learns_the_answer_format(finetuned):
    model_dir, report = finetuned
    first, last = report["curve"][0], report["curve"][-1]
    assert last["loss"] < first["loss"]
    assert last["parse_rate"] >= 0.9, last  # held-out frames, greedy, the strict parser
    assert last["mae_acc"] < 0.5 and last["mae_steer"] < 0.3, last
    assert (model_dir / "learning_curve.png").stat().st_size > 0
    assert json.loads((model_dir / "finetune.json").read_text())["final"] == last


@pytest.fixture(scope="module")
def advisor(finetuned):
    from feedback.vlm_advisor import VlmAdvisor

    model_dir, _ = finetuned
    return VlmAdvisor(
        VlmConfig(
            model=str(model_dir),
            pip=(),
            dtype="float32",
            max_model_len=1024,
            max_images_per_prompt=3,
            enforce_eager=True,
        )
    )


def _items(examples):
    """The examples' steps as a worker sends them: the advisor builds the same prompt from them."""
    return [
        FeedbackItem(
            env_id=0,
            step=i,
            wanted=("vlm_action",),
            command=e.command,
            speed=e.speed,
            action=np.zeros(2, np.float32),
            image=e.images[0],
            forward=e.forward,
        )
        for i, e in enumerate(examples)
    ]


def test_vllm_answers_in_one_batch_as_transformers_does(advisor, finetuned, dataset_dir):
    """The served model is the fine-tuned one: vLLM's greedy answers match transformers' on the same
    prompts, and one generate call answers the whole batch."""
    from teacher_training.vlm_finetune import generate, load_base

    model_dir, _ = finetuned
    _, held_out = build_examples(dataset_dir)
    examples = [e for e in held_out if e.task == "action"][:24]
    calls = []
    engine_generate = advisor._llm.generate
    advisor._llm.generate = lambda requests, *a, **k: calls.append(len(requests)) or engine_generate(requests, *a, **k)
    try:
        outputs = advisor._generate(
            [
                {"prompt": advisor.format_prompt(e.prompt), "multi_modal_data": {"image": _pil(e.images[0])}}
                for e in examples
            ]
        )
    finally:
        advisor._llm.generate = engine_generate
    served = [o.outputs[0].text for o in outputs]
    model, processor = load_base(model_dir, 0)
    reference = generate(model.eval(), processor, examples, 32)
    assert calls == [len(examples)]
    assert np.mean([a.strip() == b.strip() for a, b in zip(served, reference)]) >= 0.9, (served[:3], reference[:3])
    items = _items(examples)
    assert [advisor._request(item)["prompt"] for item in items] == [advisor.format_prompt(e.prompt) for e in examples]
    results = advisor(items)
    available = [validate("vlm_action", r.values["vlm_action"])[1] for r in results]
    assert np.mean(available) >= 0.9
    assert advisor.counters()["requested"] == len(examples)


def _pil(image):
    from PIL import Image

    return Image.fromarray(image)


def test_risk_windows_are_described(advisor, dataset_dir):
    _, held_out = build_examples(dataset_dir)
    windows = [e for e in held_out if e.task == "risk"][:8]
    texts = advisor.describe([e.images for e in windows])
    assert len(texts) == len(windows) and all(t is None or isinstance(t, str) for t in texts)
    assert advisor.described + advisor.undescribed == len(windows)
    assert any(t == CLEAR or (t and "pedestrian" in t) for t in texts)
    with pytest.raises(ValueError, match="max_images_per_prompt"):
        advisor.describe([tuple(windows[0].images) * 2])


@pytest.mark.ray
def test_train_with_the_vlm_advisor_on_ray(finetuned, local_ray, tmp_path):
    """train.py with feedback.model=vlm: the fine-tuned model answers through vLLM in the Serve
    deployment while a rollout worker drives; guidance (VMR) learns from its answers."""
    model_dir, _ = finetuned
    args = [
        "--config",
        "configs/quickstart.yaml",
        "--config",
        "configs/debug.yaml",
        "--config",
        "configs/vlm/cpu.yaml",
        f"feedback.vlm.model={model_dir}",
        "feedback.vlm.enforce_eager=true",
        "agent.guidance.vmr_weight=1.0",
        "run.mode=ray",
        "workers.num_workers=1",
        "run.total_env_steps=400",
        f"run.runs_dir={tmp_path}",
        "run.name=vlm",
        "feedback.deadline_s=30",
        "feedback.max_pending_age_s=20",
        "agent.network=small",
        "eval.routes=[0]",
        "eval.max_steps=5",
        "run.shutdown_ray=false",
    ]
    assert train.main(args) == 0
    (run,) = tmp_path.glob("vlm-*")
    last = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()][-1]
    assert last["env_steps"] >= 400 and last["learner_updates"] > 0
    asked = last["feedback/answered"] + last["feedback/malformed"] + last["feedback/expired"]
    assert asked >= 400 and last["feedback/answered"] / asked >= 0.8, last  # served, parsed, in time
    assert last["replay_feedback_vlm_action"] > 0.8 and np.isfinite(last["loss/vmr_loss"])


def test_drivevlm_variant_trains(finetuned, tmp_path):
    """train.py with DriveVLM-RL's pathways (local mode: CLIP and the vLLM engine in this process): CLIP
    scores every step, the VLM describes the windows the gate opens, the reward is synthesized."""
    import torch

    from feedback.clip_model import ClipModel, ClipSource

    model_dir, _ = finetuned
    torch.manual_seed(0)
    clip = ClipModel.load(ClipSource("MentorCLIP-Tiny")).save(tmp_path / "clip")
    args = [
        "--config",
        "configs/variants/sac-drivevlm.yaml",
        "--config",
        "configs/debug.yaml",
        "--config",
        "configs/vlm/cpu.yaml",
        "--config",
        "configs/vlm/drivevlm-cpu.yaml",
        "env.route_suite=random",
        "env.traffic=dense",
        "eval.town=Generated",
        "eval.route_suite=null",
        f"feedback.clip.checkpoint={clip}",
        f"feedback.vlm.model={model_dir}",
        "feedback.vlm.enforce_eager=true",
        "run.mode=local",
        "workers.num_workers=1",
        "agent.network=small",
        "run.total_env_steps=300",
        f"run.runs_dir={tmp_path}",
        "run.name=drivevlm",
        "eval.routes=[0]",
        "eval.max_steps=5",
    ]
    assert train.main(args) == 0
    (run,) = tmp_path.glob("drivevlm-*")
    last = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()][-1]
    assert last["env_steps"] >= 300 and last["learner_updates"] > 0
    assert last["feedback/answered"] > 0 and "drivevlm/gate_rate" in last, last
    assert 0.0 <= last["drivevlm/gate_rate"] <= 1.0 and last["drivevlm/unscored_fraction"] < 0.5
    if last["drivevlm/gated_items"] > 0:  # walkers came near the route: the VLM was called for them
        assert last["drivevlm/vlm_latency_s"] > 0


def test_lora_finetuning_merges_into_a_plain_model(dataset_dir, tmp_path):
    """--lora-rank: only the adapters train, and the saved model is the merged plain one vLLM loads."""
    from transformers import AutoModelForImageTextToText

    from teacher_training.vlm_build import build
    from teacher_training.vlm_finetune import FinetuneSettings, finetune, load_base

    base = build(tmp_path / "base")
    model, _ = load_base(base, lora_rank=4)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < 0.2 * sum(p.numel() for p in model.parameters())
    settings = FinetuneSettings(steps=3, batch_size=4, eval_every=3, eval_examples=4, lora_rank=4, lr=1e-3)
    finetune(base, dataset_dir, tmp_path / "lora", settings)
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "lora")
    assert not any("lora" in name for name, _ in merged.named_parameters())
