"""The chat format shared by training and evaluation.

Training and evaluation must see the same prompt tokens, so both go through `prompt_ids`: the
user turn rendered with the model's chat template and the generation prompt. Training appends the
response and the end-of-turn token, and only those completion tokens carry labels.
"""

from __future__ import annotations

from typing import Any

from spt.store.ids import text_hash

IGNORE_INDEX = -100


def chat_template_hash(tokenizer: Any) -> str:
    """Hash of the chat template text (recorded with runs and evaluations)."""
    return text_hash(tokenizer.chat_template or "")


def render_prompt(tokenizer: Any, prompt: str) -> str:
    """The prompt as the model sees it: chat template with the assistant generation prompt."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    return tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]


def completion_text(tokenizer: Any, prompt: str, response: str) -> str:
    """What follows the generation prompt in a full conversation, ending at the end-of-turn token."""
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
    )
    head = render_prompt(tokenizer, prompt)
    if full.startswith(head):
        tail = full[len(head):]
    else:  # templates that re-render earlier turns differently: fall back to response + eos
        tail = response + (tokenizer.eos_token or "")
    eos = tokenizer.eos_token
    if eos and eos in tail:
        tail = tail[: tail.index(eos) + len(eos)]
    return tail


def encode_example(tokenizer: Any, prompt: str, response: str, max_length: int | None = None) -> dict[str, list[int]]:
    """Token ids and labels for completion-only SFT (prompt tokens labelled IGNORE_INDEX).

    Truncation keeps the whole completion where possible by cutting the prompt from the left.
    """
    p = prompt_ids(tokenizer, prompt)
    c = tokenizer(completion_text(tokenizer, prompt, response), add_special_tokens=False)["input_ids"]
    if max_length is not None and len(p) + len(c) > max_length:
        keep_p = min(len(p), max(max_length - len(c), max_length // 2))
        p = p[len(p) - keep_p:]
        c = c[: max_length - keep_p]
    return {"input_ids": p + c, "labels": [IGNORE_INDEX] * len(p) + list(c)}
