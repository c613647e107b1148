"""`hf`: transformers on local weights (the default engine), through `spt.eval.generate.generate_batched`.

Requests are grouped by their sampling settings and sent as length-sorted, left-padded batches; a whole
chat (`messages`) is rendered with the model's chat template exactly as a single user turn would be.
Stop strings cut the reply at their first occurrence (`finish_reason` "stop"). A model already loaded by
the caller (evaluation also computes teacher-forced losses with it) is passed as `options["loaded"]`
= (model, tokenizer) and is then not freed by `close()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spt.engines.base import Engine, EngineSpec, GenerationRequest, GenerationResult, OnResults
from spt.errors import SptError

OPTIONS = ("dtype", "device", "batch_size", "loaded")


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first of the `stop` strings, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class HFEngine:
    name = "hf"

    def __init__(self, spec: EngineSpec, model: Any, tokenizer: Any, owned: bool):
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self._owned = owned

    def identity(self) -> dict[str, Any]:
        return {"engine": self.name}

    def describe(self) -> dict[str, Any]:
        return {**self.identity(), "target": self.spec.target, "device": str(self.model.device),
                "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch.")}

    def generate(self, requests: Sequence[GenerationRequest], *, on_results: OnResults | None = None
                 ) -> list[GenerationResult]:
        from spt.eval.generate import generate_batched

        out: list[GenerationResult | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            key = (r.max_new_tokens, r.temperature, r.top_p, r.seed, r.messages is None)
            groups.setdefault(key, []).append(i)
        for (max_new, temperature, top_p, seed, user_turn), idx in groups.items():
            texts = [self.prompt_text(requests[i]) for i in idx]

            def on_batch(batch: list[dict], idx: list[int] = idx) -> None:
                done = [self._result(idx[b["index"]], requests[idx[b["index"]]], b) for b in batch]
                for res in done:
                    out[res.index] = res
                if on_results is not None:
                    on_results(done)

            # chat=False for whole chats: `prompt_text` has applied the template already
            generate_batched(self.model, self.tokenizer, texts, max_new_tokens=max_new,
                             batch_size=self.spec.options.get("batch_size", "auto"), temperature=temperature,
                             top_p=top_p, seed=seed, chat=user_turn, on_batch=on_batch)
        return [r for r in out if r is not None]

    def prompt_text(self, r: GenerationRequest) -> str:
        """The text the model continues: the chat template applied to whole chats (GRPO tokenises it too)."""
        if r.messages is None:
            return r.prompt or ""
        return self.tokenizer.apply_chat_template(r.as_messages(), tokenize=False, add_generation_prompt=True)

    @staticmethod
    def _result(index: int, req: GenerationRequest, b: dict) -> GenerationResult:
        text, stopped = cut_at_stop(b["response"], req.stop)
        return GenerationResult(index=index, key=req.key, response=text,
                                finish_reason="stop" if stopped else b["finish_reason"],
                                n_prompt_tokens=b["n_prompt_tokens"], n_new_tokens=b["n_new_tokens"],
                                latency_s=b["latency_s"], meta={"batch_size": b["batch_size"]})

    def close(self) -> None:
        if self._owned:
            self.model = None


class HFFactory:
    name = "hf"
    summary = "transformers generate() on local weights, batched (default)"
    local = True

    def available(self) -> str | None:
        return None

    def validate(self, spec: EngineSpec) -> None:
        unknown = sorted(set(spec.options) - set(OPTIONS))
        if unknown:
            raise SptError(f"engine hf has no option {unknown[0]!r}; it takes {', '.join(OPTIONS)}")

    def open(self, spec: EngineSpec) -> Engine:
        loaded = spec.options.get("loaded")
        if loaded is not None:
            model, tok = loaded
            return HFEngine(spec, model, tok, owned=False)
        from spt.models.load import load_model

        model, tok = load_model(spec.target, dtype=spec.options.get("dtype"), device=spec.options.get("device"))
        return HFEngine(spec, model, tok, owned=True)


FACTORY = HFFactory()
