"""Every SPT_* environment variable set to bad values, with a cheap command that reads it.

A bad value exits 2 with one line naming the variable, no traceback, store unchanged. A value the
inventory documents as accepted (`input_inventory.ENV_VARS[...].ok`, e.g. empty = unset) must not crash.
"""

from __future__ import annotations

import input_inventory as inv
import pytest
from fuzz_world import World, build_template, check
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.timeout(300)

EXTRA_BAD = {  # per kind, beyond inv.ENV_BAD
    "number": ["inf", "1e400", "0x10", str(10**30)],
    "dir": ["{AFILE}"],
    "db": ["{ADIR}", "{GARBAGE}"],
    "spec": ["bogus", "finetune,bogus"],
}


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-env") / "w"
    return World(folder, build_template(folder))


def test_inventory_lists_every_env_var():
    missing = inv.env_vars_in_source() - set(inv.ENV_VARS)
    assert not missing, f"add these to tests/input_inventory.py ENV_VARS: {sorted(missing)}"


CASES = [(var, cmd, value) for var, ev in inv.ENV_VARS.items() for cmd in ev.commands
         for value in dict.fromkeys([*inv.ENV_BAD, *EXTRA_BAD.get(ev.kind, [])])]


@pytest.mark.parametrize("var,cmd,value", CASES, ids=[f"{v}={x!r}:{' '.join(c[-2:])}" for v, c, x in CASES])
def test_bad_env_value(world, tmp_path, monkeypatch, var, cmd, value):
    ev = inv.ENV_VARS[var]
    with world.copy(tmp_path) as d:
        filled = world.fill(value, d)
        argv = [world.fill(a, d) for a in cmd]
        if var != "SPT_HOME":  # keep SPT_HOME (the fixture's) inside the world so a default store is seen
            monkeypatch.setenv("SPT_HOME", str(d / "home"))
        o = check(d, world, argv, [var], env={var: filled}, expect_refusal=value not in ev.ok)
    assert not o.problems, o.describe()


FUZZ = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NUMERIC = [v for v, ev in inv.ENV_VARS.items() if ev.kind == "number"]


@FUZZ
@given(var=st.sampled_from(NUMERIC),
       value=st.one_of(st.integers(max_value=-1).map(str), st.floats(allow_nan=True).filter(lambda x: not x >= 0)
                       .map(repr), st.text(alphabet="abc-+.e ", min_size=1, max_size=6)
                       .filter(lambda t: not t.strip().replace(".", "", 1).isdigit())))
def test_fuzz_numeric_env(world, tmp_path, monkeypatch, var, value):
    ev = inv.ENV_VARS[var]
    with world.copy(tmp_path) as d:
        monkeypatch.setenv("SPT_HOME", str(d / "home"))
        argv = [world.fill(a, d) for a in ev.commands[0]]
        o = check(d, world, argv, [var], env={var: value})
    assert not o.problems, o.describe()
