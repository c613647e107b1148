"""`none`: plain SFT on the training data (completion-only token-mean loss); the reference point."""

from __future__ import annotations

from spt.train.defenses.base import Defense


class NoDefense(Defense):
    name = "none"
    summary = "plain SFT (no defense)"
    stages = ("align", "task")
