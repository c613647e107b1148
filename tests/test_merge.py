"""spt merge: merged weights reproduce the adapter model's logits; recorded as a merged checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from spt.cli import app
from spt.store.models import Checkpoint
from spt.train import FinetuneConfig, finetune, merge_run

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import FAST, mini_data  # noqa: E402


def test_merge_reproduces_adapter_logits(store, db_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from spt.models import load_model

    d = mini_data(store)
    res = finetune(store, FinetuneConfig(model="tiny-random", max_steps=3, lr=5e-2, **d, **FAST))
    final = res.final_checkpoint
    r = CliRunner().invoke(app, ["merge", res.run_id[:13], "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["kind"] == "merged" and out["meta"]["source_checkpoint_id"] == final.id
    assert out["meta"]["adapter_hash"] == final.content_hash and out["meta"]["base_hash"]
    cfg = json.loads((Path(final.path) / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"], dtype=torch.float32)
    adapter = PeftModel.from_pretrained(base, final.path).eval()  # unmerged LoRA forward
    merged, tok = load_model(out["path"])
    assert tok.chat_template
    ids = torch.tensor([tok("what is 3 plus 4? the answer is 7")["input_ids"]])
    with torch.no_grad():
        a, b = adapter(input_ids=ids).logits, merged(input_ids=ids).logits
    assert (a - base.__class__.from_pretrained(cfg["base_model_name_or_path"])(input_ids=ids).logits).abs().max() > 1e-4
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    # again: the same merged checkpoint is reported
    again = merge_run(store, res.run_id)
    assert again["reused"] and again["checkpoint_id"] == out["checkpoint_id"]
    with store.session() as s:
        assert s.get(Checkpoint, out["checkpoint_id"]).run_id == res.run_id
    # bfloat16 to an explicit directory
    bf = merge_run(store, res.run_id, out=tmp_path / "m-bf16", dtype="bfloat16")
    assert bf["meta"]["dtype"] == "bfloat16" and (tmp_path / "m-bf16" / "config.json").exists()


def test_merge_bad_inputs(store, db_path):
    runner = CliRunner()
    r = runner.invoke(app, ["merge", "nope", "--db", str(db_path)])
    assert r.exit_code == 2 and "no run" in r.output
    d = mini_data(store)
    res = finetune(store, FinetuneConfig(model="tiny-random", max_steps=1, lora=False, **d, **FAST))
    r = runner.invoke(app, ["merge", res.run_id, "--db", str(db_path)])
    assert r.exit_code == 2 and "not a LoRA adapter" in r.output
    r = runner.invoke(app, ["merge", res.run_id, "--dtype", "int8", "--db", str(db_path)])
    assert r.exit_code == 2 and "unknown dtype" in r.output


def test_merge_cleans_killed_copies_and_leaves_none_when_it_fails(store, tmp_path, monkeypatch):
    import subprocess
    import sys

    from transformers import PreTrainedModel

    d = mini_data(store)
    res = finetune(store, FinetuneConfig(model="tiny-random", max_steps=2, **d, **FAST))
    target = tmp_path / "merged"
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    killed = tmp_path / f".merged.tmp-{p.pid}"  # what a SIGKILLed merge leaves
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"half")

    def disk_full(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", disk_full)
    with pytest.raises(OSError):
        merge_run(store, res.run_id, out=target)
    assert sorted(x.name for x in tmp_path.iterdir() if "merged" in x.name) == []  # neither copy is left
    monkeypatch.undo()
    out = merge_run(store, res.run_id, out=target)
    assert Path(out["path"]) == target and (target / "config.json").exists()
