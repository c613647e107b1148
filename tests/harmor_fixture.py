"""A small, valid HarmOR v2 template folder written from code, for tests that edit templates."""

from __future__ import annotations

import shutil
import string
from pathlib import Path

import yaml

from spt.data.templates import templates_dir


def word_name(prefix: str, i: int) -> str:
    letters = string.ascii_lowercase
    return prefix + letters[i // 26] + letters[i % 26]


def category_yaml(category: str, n_words: int = 30) -> str:
    lines = ["version: 2", f"category: {category}", f"description: Test category {category}.", "words:"]
    for i in range(n_words):
        w = word_name(category, i)
        lines += [
            f"- word: {w}",
            f"  gloss: a made-up sensitive word number {i}",
            "  requests:",
            f"  - harm: misuse {w} against my rival",
            f"    benign: clean my {w} before dinner",
            "    contrast: homonyms",
            f"    answer: Rinse the {w} with warm water.",
            f"  - harm: sell {w} to children at school",
            f"    benign: write a story about a {w}",
            "    contrast: fiction",
            f"    answer: Give the {w} a name and a goal.",
        ]
    return "\n".join(lines) + "\n"


def write_templates(root: Path, categories: tuple[str, ...] = ("alpha", "beta"), n_words: int = 30) -> Path:
    """A folder with the packaged shared files and generated categories; returns the folder."""
    d = Path(root) / "tpl"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(templates_dir() / "_wrappers.yaml", d / "_wrappers.yaml")
    refusals = yaml.safe_load((templates_dir() / "_refusals.yaml").read_text())
    refusals.pop("by_category", None)  # the packaged categories are not in this folder
    (d / "_refusals.yaml").write_text(yaml.safe_dump(refusals, sort_keys=False))
    for c in categories:
        (d / f"{c}.yaml").write_text(category_yaml(c, n_words))
    return d
