"""The defense interface: one file adds a defense with its flags, YAML keys, sweep axes and identity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from typer.testing import CliRunner

from spt.cli import app
from spt.sweep.plan import SweepSpec, plan_sweep
from spt.train import DEFENSES, FinetuneConfig

WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


def test_registry_finds_every_module():
    assert {"none", "anchor", "proximal", "safelora", "lisa", "tokenwise"} <= set(DEFENSES)
    assert DEFENSES["none"].stages == ("align", "task") and DEFENSES["lisa"].stages == ("task",)


def test_finetune_help_lists_each_defense_option():
    r = CliRunner().invoke(app, ["finetune", "--help"], env=WIDE)
    assert r.exit_code == 0, r.output
    for name, cls in DEFENSES.items():
        for f in cls.fields():
            assert "--" + f.replace("_", "-") in r.output, (name, f)
    assert "Defense: lisa" in r.output and "Defense: tokenwise" in r.output


def test_option_of_another_defense_is_refused(db_path):
    r = CliRunner().invoke(app, ["--db", str(db_path), "finetune", "--model", "tiny-random", "--defense", "anchor",
                                 "--lisa-align-steps", "3"])
    assert r.exit_code == 2 and "option of --defense lisa" in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(app, ["--db", str(db_path), "finetune", "--model", "tiny-random", "--defense", "lisa",
                                 "--lisa-prox-after", "1.5"])
    assert r.exit_code == 2 and "--lisa-prox-after 1.5 is outside [0, 1]" in r.output


def test_yaml_recipe_keys(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("defense: lisa\nlisa-align-steps: 7\nlam: 0.01\ntokenwise_bias_length: 2\n")
    c = FinetuneConfig.from_yaml(p).resolve()
    assert c.lisa_align_steps == 7 and c.lam == 0.01
    assert c.tokenwise_bias_length is None  # another defense's option never reaches the run
    ident = c.identity_fields()
    assert ident["lisa_align_steps"] == 7 and "tokenwise_bias_length" not in ident


def test_sweep_plans_each_defense_with_its_own_axes():
    spec = SweepSpec(model="tiny-random", defenses=["none", "anchor", "proximal", "safelora", "lisa", "tokenwise"],
                     lams=[0.1, 0.3], axes={"lisa_align_steps": [2, 5], "safelora_mode": ["paper", "exact"],
                                            "tokenwise.lam": [0.5]})
    spec.validate()
    by = {}
    for c in plan_sweep(spec):
        by.setdefault(c["defense"], []).append((c["lam"], tuple(sorted((c.get("options") or {}).items()))))
    assert by["none"] == [(None, ())]
    assert by["anchor"] == [(0.1, ()), (0.3, ())] and by["proximal"] == [(0.1, ()), (0.3, ())]
    assert by["safelora"] == [(0.1, (("safelora_mode", "paper"),)), (0.1, (("safelora_mode", "exact"),)),
                              (0.3, (("safelora_mode", "paper"),)), (0.3, (("safelora_mode", "exact"),))]
    assert [x for x, _ in by["lisa"]] == [0.1, 0.1, 0.3, 0.3]
    assert by["tokenwise"] == [(0.5, ())]  # its own λ axis replaces --lam
    # a spec without option axes keeps the id it had before axes existed
    assert "axes" not in SweepSpec(model="m", defenses=["anchor"]).to_dict()


def test_sweep_dry_run_cli(db_path):
    r = CliRunner().invoke(app, ["--db", str(db_path), "sweep", "--model", "tiny-random", "--defense",
                                 "none,anchor,proximal,safelora,lisa,tokenwise", "--axis", "lisa_align_steps=2,5",
                                 "--axis", "anchor.lam=0.1,0.3", "--dry-run"], env=WIDE)
    assert r.exit_code == 0, r.output
    assert "8 configurations" in r.output and "lisa_align_steps=5" in r.output
    r = CliRunner().invoke(app, ["--db", str(db_path), "sweep", "--model", "tiny-random", "--defense", "none",
                                 "--axis", "lisa_align_steps=2", "--dry-run"])
    assert r.exit_code != 0 and "not in --defense" in r.output


TOY = '''
"""`toy`: a defense added as one file (test)."""
from spt.train.defenses.base import Batch, Defense, Option


class ToyDefense(Defense):
    name = "toy"
    summary = "scale the task loss"
    options = (Option("scale", "float", 2.0, "loss scale", range=(0.0, 10.0)),)

    def batches(self, ctx, step, micro):
        s = self.opts["scale"]
        return [Batch(b.examples, [w * s for w in b.weights]) for b in super().batches(ctx, step, micro)]
'''


def test_one_file_adds_a_defense(tmp_path):
    """A copy of spt with one more file in spt/train/defenses/: flag, identity field and sweep axis, no other edit."""
    import shutil
    from pathlib import Path

    import spt

    shutil.copytree(Path(spt.__file__).parent, tmp_path / "spt", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "spt" / "train" / "defenses" / "toy.py").write_text(textwrap.dedent(TOY))
    code = textwrap.dedent("""
        import json, sys
        from typer.testing import CliRunner
        from spt.cli import app
        from spt.train import FinetuneConfig
        from spt.sweep.plan import SweepSpec, plan_sweep
        c = FinetuneConfig(defense="toy", toy_scale=3).resolve()
        h = CliRunner().invoke(app, ["finetune", "--help"], env={"COLUMNS": "200"}).output
        spec = SweepSpec(model="m", defenses=["none", "toy"], axes={"toy_scale": [1, 3]})
        spec.validate()
        print(json.dumps({"ident": c.identity_fields().get("toy_scale"), "flag": "--toy-scale" in h,
                          "plan": [(x["defense"], x.get("options")) for x in plan_sweep(spec)],
                          "none_ident": "toy_scale" in FinetuneConfig().resolve().identity_fields(),
                          "where": __import__("spt").__file__}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, **WIDE, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res.pop("where").startswith(str(tmp_path))
    assert res == {"ident": 3.0, "flag": True, "none_ident": False,
                   "plan": [["none", None], ["toy", {"toy_scale": 1}], ["toy", {"toy_scale": 3}]]}
