"""Price tables: USD per million input and output tokens, per model, from a YAML file.

Tokens are facts stored with every judgment; cost is an estimate derived from a dated table, so the
table is the user's to keep current (prices go stale). Format:

    gpt-4o-mini: {input: 0.15, output: 0.60}
    my-vllm-model: {input: 0, output: 0}
"""

from __future__ import annotations

import math
from pathlib import Path

from spt.errors import SptError


def load_price_table(path: str | Path | None) -> dict[str, dict[str, float]]:
    if path is None:
        return {}
    p = Path(path).expanduser()
    if not p.is_file():
        raise SptError(f"price table {p} does not exist; pass a YAML file of model: {{input: $, output: $}}")
    from spt.data.io import load_yaml, read_text

    text = read_text(p)
    data = load_yaml(text, f"price table {p}") or {}
    if not isinstance(data, dict):
        raise SptError(f"price table {p} must map model names to {{input: $/1M tokens, output: $/1M tokens}}")
    table: dict[str, dict[str, float]] = {}
    for model, entry in data.items():
        if not isinstance(entry, dict) or not {"input", "output"} <= set(entry):
            raise SptError(f"price table {p}: {model!r} needs input and output prices (USD per 1M tokens)")
        try:
            table[str(model)] = {"input": float(entry["input"]), "output": float(entry["output"])}
        except (TypeError, ValueError):
            raise SptError(f"price table {p}: prices of {model!r} must be numbers") from None
        if not all(math.isfinite(v) for v in table[str(model)].values()):
            raise SptError(f"price table {p}: prices of {model!r} must be finite numbers")
        if table[str(model)]["input"] < 0 or table[str(model)]["output"] < 0:
            raise SptError(f"price table {p}: prices of {model!r} must not be negative")
    return table


def price_for(table: dict[str, dict[str, float]], *models: str | None) -> dict[str, float] | None:
    for m in models:
        if m and m in table:
            return table[m]
    return None


def cost_usd(price: dict[str, float] | None, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
    if price is None:
        return None
    return ((prompt_tokens or 0) * price["input"] + (completion_tokens or 0) * price["output"]) / 1e6
