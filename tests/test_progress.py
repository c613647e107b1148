"""The one progress protocol: scopes nest through `within`, and the CLI display keeps only live bars."""

from __future__ import annotations

from spt.commands._common import ProgressDisplay, _rate
from spt.progress import Progress, report, within


def test_within_prepends_scopes_and_none_stays_silent():
    got: list[Progress] = []
    inner = within(within(got.append, "[3] anchor λ=0.1"), "finetune")
    report(inner, "train", 2, 10, "steps", task_loss=1.5)
    (p,) = got
    assert p.scope == ("[3] anchor λ=0.1", "finetune") and p.key == ("[3] anchor λ=0.1", "finetune", "train")
    assert (p.done, p.total, p.unit, p.info) == (2, 10, "steps", {"task_loss": 1.5})
    assert within(None, "x") is None
    report(None, "train", 1)  # nobody listens: nothing to do, no error


def test_display_drops_bars_of_finished_scopes_and_keeps_enclosing_ones():
    shown = ProgressDisplay(quiet=True)
    with shown:
        shown(Progress("sweep", 0, 2, "configurations"))
        shown(Progress("train", 1, 4, "steps", scope=("[0] none", "finetune")))
        shown(Progress("generate", 3, 8, scope=("[0] none", "evaluate")))
        shown(Progress("alignment loss", 1, 8, scope=("[0] none", "evaluate")))
        assert set(shown._tasks) == {("sweep",), ("[0] none", "evaluate", "generate"),
                                     ("[0] none", "evaluate", "alignment loss")}
        shown(Progress("train", 1, 4, "steps", scope=("[1] anchor", "finetune")))
        assert set(shown._tasks) == {("sweep",), ("[1] anchor", "finetune", "train")}
        bar = shown.bars.tasks[-1]
        assert (bar.completed, bar.total, bar.description) == (1, 4, "[1] anchor › finetune › train")


def test_rate_column_says_what_the_numbers_are():
    train = Progress("train", 5, 10, "steps")
    assert _rate(train, {"task_loss": 0.25, "tokens_per_s": 812.4}, 3.0, 5, 0) == "loss 0.250 · 812 tok/s"
    gen = Progress("generate", 8, 8)
    assert _rate(gen, {"new_tokens": 300}, 2.0, 8, 300) == "150 tok/s"
    assert _rate(Progress("import", 40, 100, "rows"), {}, 4.0, 40, 0) == "10.0 rows/s"
