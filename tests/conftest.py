"""Shared fixtures: an isolated SPT_HOME per test and a fresh store."""

from __future__ import annotations

import pytest

from spt.store import open_store


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Never touch the user's real store or cache."""
    monkeypatch.setenv("SPT_HOME", str(tmp_path / "spt-home"))
    monkeypatch.delenv("SPT_DB", raising=False)
    cache = tmp_path.parent.parent / "spt-test-cache"  # shared across tests of one session
    monkeypatch.setenv("SPT_CACHE", str(cache))


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "spt.db"


@pytest.fixture
def store(db_path):
    s = open_store(db_path)
    yield s
    s.close()


def pytest_collection_modifyitems(config, items):
    """The fuzz cases still open (tests/input_inventory.py KNOWN_OPEN) are strict xfails: a fix must remove them."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from input_inventory import KNOWN_OPEN
    except Exception:  # noqa: BLE001 - the inventory needs the app; without it nothing is marked
        return
    for item in items:
        if "test_fuzz_" in item.nodeid and item.name in KNOWN_OPEN:
            item.add_marker(pytest.mark.xfail(strict=True, reason=KNOWN_OPEN[item.name]))
