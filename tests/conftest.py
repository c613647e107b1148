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
