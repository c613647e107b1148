"""`human`: verdicts imported with `spt evaluate --responses`, never run; naming it says how to get them."""

from __future__ import annotations

from spt.errors import SptError
from spt.judge.backends.base import BaseBackend
from spt.judge.specs import JudgeSpec


class HumanBackend(BaseBackend):
    name = "human"
    usage = ""  # not offered in --judge

    def parse(self, spec: str, arg: str, rubric: str) -> JudgeSpec:
        raise SptError("human verdicts are imported, not run: `spt evaluate --responses FILE --model-name NAME "
                       "--verdict-col COL`; compare judges with them by `spt judge --agreement`")


BACKEND = HumanBackend()
