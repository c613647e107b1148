"""Configurations are lineage-aware: the seed-s children of a seeded parent configuration are one configuration."""

from __future__ import annotations

import json

from spt.store.selection import _configuration_of, configuration_key


def _raw(start: str, lr: float) -> str:
    return json.dumps({"start": start, "stage": "align", "settings": {"lr": lr}}, separators=(",", ":"))


LINEAGE = {
    "p0": (None, _raw("model", 1)), "p1": (None, _raw("model", 1)),  # one parent configuration, seeds 0 and 1
    "c0": ("p0", _raw("weights-of-p0", 2)), "c1": ("p1", _raw("weights-of-p1", 2)),  # the same child settings
    "c2": ("p1", _raw("weights-of-p1", 3)),  # other child settings
    "g0": ("c0", _raw("weights-of-c0", 4)), "g1": ("c1", _raw("weights-of-c1", 4)),  # a third stage
    "q0": (None, _raw("model", 9)), "d0": ("q0", _raw("weights-of-q0", 2)),  # another parent configuration
    "orphan": ("deleted-run", _raw("weights-of-deleted", 2)),
    "loop-a": ("loop-b", _raw("a", 5)), "loop-b": ("loop-a", _raw("b", 5)),
}


def key(run: str) -> str:
    return _configuration_of(run, LINEAGE, {})


def test_children_of_one_parent_configuration_share_theirs_and_settings_still_separate():
    assert key("p0") == key("p1") == configuration_key(_raw("model", 1))  # parentless runs keep their keys
    assert key("c0") == key("c1") != key("c2")
    assert key("g0") == key("g1") != key("c0")
    assert key("d0") != key("c0")  # same child settings, another parent configuration


def test_a_missing_parent_or_a_cycle_falls_back_to_the_run_s_own_identity():
    assert key("orphan") == configuration_key(_raw("weights-of-deleted", 2))
    assert key("loop-a").startswith("cfg:") and key("loop-b").startswith("cfg:")
