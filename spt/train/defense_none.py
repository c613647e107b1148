"""`none`: plain SFT on the task data (completion-only loss)."""

from __future__ import annotations

from spt.train.defense_base import Defense, register


@register
class NoDefense(Defense):
    name = "none"
