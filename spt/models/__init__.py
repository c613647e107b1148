"""Model references, loading, and the chat format shared by training and evaluation."""

from spt.models.chat import (
    IGNORE_INDEX,
    chat_template_hash,
    completion_text,
    encode_example,
    prompt_ids,
    render_prompt,
)
from spt.models.load import default_device, is_adapter_dir, load_model, load_tokenizer, torch_dtype
from spt.models.resolve import PACKAGED, ResolvedModel, resolve_model, smollm2_gguf_path

__all__ = [
    "IGNORE_INDEX", "PACKAGED", "ResolvedModel", "chat_template_hash", "completion_text", "default_device",
    "encode_example", "is_adapter_dir", "load_model", "load_tokenizer", "prompt_ids", "render_prompt",
    "resolve_model", "smollm2_gguf_path", "torch_dtype",
]
