"""Loading a model and tokenizer from a resolved directory or a checkpoint (full or LoRA adapter)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spt.errors import SptError

DTYPES = ("float32", "bfloat16", "float16")


def torch_dtype(name: str | None) -> Any:
    import torch

    if name is None or name == "auto":
        return torch.float32
    if name not in DTYPES:
        raise SptError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def quiet_transformers() -> None:
    """No per-load progress bars or advisory warnings from transformers in spt's output."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def adapter_base_path(path: str | Path) -> str:
    cfg = json.loads((Path(path) / "adapter_config.json").read_text())
    return cfg["base_model_name_or_path"]


def load_model(path: str | Path, *, dtype: str | None = None, device: str | None = None,
               merge_adapter: bool = True) -> tuple[Any, Any]:
    """(model, tokenizer) from a model directory, hub id, or LoRA adapter directory.

    An adapter is loaded on its base and, with `merge_adapter`, folded in for fast inference.
    """
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    path = str(path)
    dt = torch_dtype(dtype)
    try:
        if is_adapter_dir(path):
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(adapter_base_path(path), dtype=dt)
            model = PeftModel.from_pretrained(base, path)
            if merge_adapter:
                model = model.merge_and_unload()
            tok_path = path if (Path(path) / "tokenizer_config.json").exists() else adapter_base_path(path)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dt)
            tok_path = path
        tok = load_tokenizer(tok_path)
    except OSError as e:
        raise SptError(f"cannot load model from {path} ({str(e).splitlines()[0]})") from None
    model.to(device or default_device())
    model.eval()
    return model, tok
