"""The VLM advisor: a driving VLM served with vLLM answers `vlm_action` (Found-RL §4.2).

Each item's 192 px RGB BEV and a prompt (speed, forward vector, route command) go to the VLM in
one batched `generate` call; the JSON answer is parsed strictly (`inference.vlm_prompt`) and a
malformed one leaves the item unanswered (m = 0), never a default action.

vLLM pins its own torch build, which clashes with the learner's torch, so vLLM is not installed
in the project environment: the VLM deployment runs in its own Ray runtime_env
(its packages: `feedback.vlm.pip`). This module therefore imports vLLM lazily, only when it builds an
engine; tests inject a fake engine through `llm=`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from inference.feedback import FeedbackItem, FeedbackResult
from inference.hub import hub_cache_dir, hub_model_cached, hub_offline
from inference.vlm_prompt import build_prompt, parse_action

log = logging.getLogger(__name__)

def _looks_local(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~"))


def resolve_model(model: str) -> str:
    """The path or hub id to give vLLM; fails fast when the model cannot be loaded locally."""
    if _looks_local(model):
        path = Path(model).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"VLM model path {model!r} does not exist")
        return str(path)
    if Path(model).is_dir():  # a relative local directory such as models/internvl3-1b
        return model
    if hub_offline() and not hub_model_cached(model):
        raise FileNotFoundError(
            f"VLM model {model!r} is not in the Hugging Face cache ({hub_cache_dir()}) and "
            "HF_HUB_OFFLINE=1 forbids downloading it: download it on a connected machine "
            f"(`hf download {model}`) and copy it into that cache, or give the model as a local path"
        )
    return model


def _import_vllm():
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            "vLLM is not installed in this Python environment. The VLM deployment runs in its own "
            "Ray runtime_env (packages from feedback.vlm.pip) because vLLM pins its own torch; build the "
            "VlmAdvisor inside that runtime_env, not in the learner's environment."
        ) from err
    return vllm


def _sampling_params(temperature: float, max_tokens: int, injected: bool):
    """vLLM SamplingParams; a plain dict when a fake engine was injected and vLLM is absent."""
    try:
        import vllm
    except ImportError:
        if not injected:
            raise
        return {"temperature": temperature, "max_tokens": max_tokens}
    return vllm.SamplingParams(temperature=temperature, max_tokens=max_tokens)


class VlmAdvisor:
    inputs = frozenset({"image"})

    def __init__(
        self,
        model: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        max_model_len: int = 4096,
        gpu_memory_utilization: float = 0.5,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        llm=None,
    ):
        """`trust_remote_code` runs Python shipped with the model (InternVL3 needs it): an explicit
        opt-in, feedback.vlm.trust_remote_code, for models whose code you have read or trust."""
        self.model = model
        injected = llm is not None
        if llm is None:
            # Resolve before importing vLLM so a missing model fails in well under a second.
            resolved = resolve_model(model)
            vllm = _import_vllm()
            llm = vllm.LLM(
                model=resolved,
                trust_remote_code=trust_remote_code,
                max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization,
                dtype=dtype,
                limit_mm_per_prompt={"image": 1},
            )
        self._llm = llm
        self._sampling = _sampling_params(temperature, max_tokens, injected)
        self._tokenizer = self._get_tokenizer()
        self.requested = 0  # items sent to the VLM
        self.answered = 0  # answers that parsed into an action
        self.malformed = 0  # answers that did not

    def _get_tokenizer(self):
        try:
            return self._llm.get_tokenizer()
        except Exception as err:  # noqa: BLE001 - engines without a tokenizer still work with the plain prompt
            log.warning("VLM engine has no usable tokenizer (%s); using a plain <image> prompt", err)
            return None

    def format_prompt(self, text: str) -> str:
        """The chat-formatted prompt; a plain "<image>\\n" prefix when the template fails."""
        if self._tokenizer is not None:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            try:
                return self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception as err:  # noqa: BLE001 - models without a (multimodal) chat template
                log.debug("chat template failed (%s); using a plain <image> prompt", err)
        return "<image>\n" + text

    def _request(self, item: FeedbackItem) -> dict:
        text = build_prompt(item.speed, item.forward, item.command)
        return {"prompt": self.format_prompt(text), "multi_modal_data": {"image": Image.fromarray(item.image)}}

    def _parse_output(self, output) -> dict:
        completions = getattr(output, "outputs", None) or []
        text = getattr(completions[0], "text", None) if completions else None
        action = parse_action(text) if isinstance(text, str) else None
        if action is None:
            self.malformed += 1
            log.debug("malformed VLM answer: %r", text)
            # Hand the raw answer on: the worker's validation marks it malformed (m = 0) at once, even
            # when another model of a combined deployment answered the item's other fields.
            return {"vlm_action": text}
        self.answered += 1
        return {"vlm_action": action}

    def __call__(self, items: list[FeedbackItem]) -> list[FeedbackResult]:
        values: list[dict] = [{} for _ in items]
        asked = [i for i, item in enumerate(items) if "vlm_action" in item.wanted and item.image is not None]
        if asked:
            requests = [self._request(items[i]) for i in asked]
            self.requested += len(requests)
            # One call for the whole batch; an exception propagates so Serve counts a failed batch.
            outputs = list(self._llm.generate(requests, self._sampling))
            if len(outputs) != len(requests):
                raise RuntimeError(f"VLM returned {len(outputs)} outputs for {len(requests)} requests")
            for i, output in zip(asked, outputs):  # vLLM returns outputs in request order
                values[i] = self._parse_output(output)
        return [FeedbackResult(item.env_id, item.step, v) for item, v in zip(items, values)]

    def counters(self) -> dict[str, int]:
        return {"requested": self.requested, "answered": self.answered, "malformed": self.malformed}
