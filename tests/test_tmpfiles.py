"""Temporary copies left by killed processes are removed by the next writer; live writers' copies are kept."""

from __future__ import annotations

import os
import subprocess
import sys

from spt.models.resolve import _atomic_build
from spt.tmpfiles import remove_stale, tmp_name


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_remove_stale_keeps_live_and_own_copies(tmp_path):
    target = tmp_path / "model"
    dead = tmp_path / f".model.tmp-{_dead_pid()}"
    live_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f".model.tmp-{live_proc.pid}"
        own = tmp_name(target)
        other = tmp_path / f".other.tmp-{_dead_pid()}"
        for d in (dead, live, own, other):
            d.mkdir()
        (dead / "weights.bin").write_bytes(b"x")
        assert remove_stale(target) == [dead]
        assert not dead.exists() and live.exists() and own.exists() and other.exists()
    finally:
        live_proc.kill()
        live_proc.wait()


def test_a_killed_model_build_is_cleaned_up_by_the_next_one(tmp_path):
    target = tmp_path / "tiny"
    leftover = tmp_path / f".tiny.tmp-{_dead_pid()}"
    leftover.mkdir()
    (leftover / "half.safetensors").write_bytes(b"half")

    def build(tmp):
        assert tmp.name == f".tiny.tmp-{os.getpid()}"
        (tmp / "config.json").write_text("{}")

    assert _atomic_build(target, build) == target
    assert (target / "config.json").exists() and not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
