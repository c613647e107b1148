"""Every option of every command, fuzzed: a malformed value exits 2 with one line, no traceback, store unchanged.

The options come from the app itself (`input_inventory.PARAMS`), their kinds and the values each kind must
refuse from `input_inventory.SPECS` / `BAD`. Two layers:

- `test_malformed_value_is_refused`: every (option, canonical bad value of its kind): deterministic.
- `test_fuzz_*`: hypothesis draws an option of a kind and a generated bad value (random negatives,
  NaN/inf, integers past SQLite's range, text with control characters, long text), fixed budget,
  derandomized, no shrinking (each example is a CLI run).
"""

from __future__ import annotations

import math

import input_inventory as inv
import pytest
from fuzz_world import World, build_template, check, value_names
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.timeout(300)

FUZZ = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-template") / "w"
    return World(folder, build_template(folder))


def argv_for(p: inv.Param, value: str) -> list[str]:
    """`spt --db STORE <command> <base> <option> VALUE` (an argument: the value in its place)."""
    s = inv.spec_of(p)
    base = list(s.base or [])
    if p.command == ():  # a root option: `spt --db VALUE db status`
        return [p.flag, value, *base]
    head = [] if p.name == "db" else ["--db", "{DB}"]
    if p.is_argument:
        # arguments come first, in declaration order; the base holds the other arguments and options
        args = [q for q in inv.PARAMS if q.command == p.command and q.is_argument]
        if args.index(p) == 0:
            return [*head, *p.command, value, *base]
        n_before = args.index(p)
        return [*head, *p.command, *base[:n_before], value, *base[n_before:]]
    return [*head, *p.command, *base, p.flag, value]


def names_for(p: inv.Param, filled_value: str) -> list[str]:
    names = [*p.opts, *p.secondary, p.name.upper(), p.name.replace("_", "-"), p.name, p.name.replace("_", " ")]
    if p.is_argument:  # an argument is named in words: RUN_ID -> "run id", EVALUATION_IDS -> "evaluation"
        names += [p.name.upper().replace("_", "-"), p.name.removesuffix("_ids").replace("_", " ")]
    if p.name == "db":
        names += ["store", "SPT_DB"]
    return names + value_names("", filled_value)


import os  # noqa: E402

FULL = os.environ.get("SPT_FUZZ_FULL") == "1"  # every (option, bad value): ~1200 CLI runs, ~15 min on 2 cores


def _cases():
    """Every option with its kind's bad values; by default one value per option (rotating through the kind's
    list by option index, so every value of a kind is exercised by some option), all with SPT_FUZZ_FULL=1."""
    out = []
    for i, p in enumerate(inv.PARAMS):
        vals = inv.bad_values(p)
        if not vals:
            continue
        chosen = vals if FULL else [vals[i % len(vals)]]
        out += [(p, v, m) for v, m in chosen]
    return out


CASES = _cases()


def _id(p: inv.Param, v: str) -> str:
    shown = v if len(v) <= 20 else f"{v[:8]}..<{len(v)}>"
    return f"{p.key}={shown!r}"


def test_inventory_is_complete():
    """A new option (or argument) that the inventory does not classify fails here: add it to SPECS."""
    missing = [p.key for p in inv.PARAMS if inv.spec_of(p) is None]
    stale = sorted(set(inv.SPECS) - {p.key for p in inv.PARAMS})
    assert not missing, f"classify these in tests/input_inventory.py SPECS: {missing}"
    assert not stale, f"these SPECS name no option any more: {stale}"
    kinds = {inv.spec_of(p).kind for p in inv.PARAMS}
    assert kinds <= set(inv.BAD), kinds - set(inv.BAD)
    assert set(inv.BASE) >= set(inv.commands()), set(inv.commands()) - set(inv.BASE)


def test_every_base_command_line_is_valid(world, tmp_path):
    """The base of each command parses (so a refusal in the fuzz tests is the fuzzed value's doing)."""
    from fuzz_world import invoke

    bad = []
    for cmd in inv.commands():
        base = inv.BASE[cmd]
        with world.copy(tmp_path) as d:
            argv = [world.fill(a, d) for a in ["--db", "{DB}", *cmd, *base, "--help"]]
            r = invoke(argv)
            if r.exit_code != 0:
                bad.append((cmd, r.output[-300:]))
    assert not bad


@pytest.mark.parametrize("p,value,must_refuse", CASES, ids=[_id(p, v) for p, v, _ in CASES])
def test_malformed_value_is_refused(world, tmp_path, p, value, must_refuse):
    with world.copy(tmp_path) as d:
        filled = world.fill(value, d)
        argv = [world.fill(a, d) for a in argv_for(p, "\0VALUE\0")]
        argv = [filled if a == "\0VALUE\0" else a for a in argv]
        o = check(d, world, argv, names_for(p, filled), expect_refusal=must_refuse)
    assert not o.problems, o.describe()


# ---------------------------------------------------------------------------------------------------------
# hypothesis: generated bad values, per kind
# ---------------------------------------------------------------------------------------------------------
def _params(*kinds: str) -> list[inv.Param]:
    return [p for p in inv.PARAMS if not p.is_flag and not inv.spec_of(p).skip and inv.spec_of(p).kind in kinds]


INT_PARAMS = _params("count", "nonneg_int", "port")
FLOAT_PARAMS = _params("pos_float", "nonneg_float", "unit_float")
TEXT_PARAMS = _params("ref", "choice", "column", "spec")
NAME_PARAMS = _params("new_name", "text")
PATH_PARAMS = _params("path_in", "path_out", "dir_out", "dir_in")

bad_ints = st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63, max_value=10**40)).map(str)
bad_floats = st.one_of(st.floats(max_value=-1e-9, allow_infinity=True, allow_nan=False),
                       st.just(math.nan), st.just(math.inf), st.floats(min_value=1e300, allow_nan=False)).map(repr)
control = st.characters(min_codepoint=1, max_codepoint=31)
bad_text = st.one_of(
    st.text(alphabet=control, min_size=1, max_size=8),  # only control characters
    st.builds(lambda a, c, b: a + c + b, st.text(alphabet="abc[]/", max_size=4), control, st.text(max_size=4)),
    st.integers(min_value=10_001, max_value=20_000).map(lambda n: "y" * n),  # long
    st.sampled_from(["[bold]x[/]", "[/]", "[red]", "[link=file:///etc/passwd]x[/link]"]),  # markup
    st.text(alphabet=" \t", min_size=0, max_size=3),  # empty / blank
)
_PATH_MORE = {  # generated variants per path kind: all malformed
    "path_in": ["{AFILE}/deeper/x.csv", "{ADIR}/missing/x.jsonl", "{AFILE}/", " "],
    "path_out": ["{AFILE}/deeper/x.csv", "{AFILE}/", " "],
    "dir_out": ["{AFILE}/deeper", "{AFILE}/", " "],
    "dir_in": ["{AFILE}/deeper", "{ADIR}/missing", "{AFILE}/", " "],
}


def _must_refuse(p: inv.Param, v: str) -> bool:
    s = inv.spec_of(p)
    if v in s.ok:
        return False
    if s.kind == "new_name" and v.startswith("["):
        return False  # markup is a legal name, shown literally
    if s.kind == "text" and v.startswith("["):
        return p.name == "host"  # markup in a slurm word or shell line is text like any other
    return True


def _run_one(world, tmp_path, p, value):
    with world.copy(tmp_path) as d:
        filled = world.fill(value, d)
        argv = [world.fill(a, d) for a in argv_for(p, "\0VALUE\0")]
        argv = [filled if a == "\0VALUE\0" else a for a in argv]
        return check(d, world, argv, names_for(p, filled), expect_refusal=_must_refuse(p, value))


@FUZZ
@given(p=st.sampled_from(INT_PARAMS), value=bad_ints)
def test_fuzz_integers(world, tmp_path, p, value):
    o = _run_one(world, tmp_path, p, value)
    assert not o.problems, o.describe()


@FUZZ
@given(p=st.sampled_from(FLOAT_PARAMS), value=bad_floats)
def test_fuzz_floats(world, tmp_path, p, value):
    o = _run_one(world, tmp_path, p, value)
    assert not o.problems, o.describe()


@FUZZ
@given(p=st.sampled_from(TEXT_PARAMS), value=bad_text)
def test_fuzz_text(world, tmp_path, p, value):
    o = _run_one(world, tmp_path, p, value)
    assert not o.problems, o.describe()


@FUZZ
@given(p=st.sampled_from(NAME_PARAMS), value=bad_text)
def test_fuzz_names(world, tmp_path, p, value):
    o = _run_one(world, tmp_path, p, value)
    assert not o.problems, o.describe()


@FUZZ
@given(p=st.sampled_from(PATH_PARAMS), data=st.data())
def test_fuzz_paths(world, tmp_path, p, data):
    kind = inv.spec_of(p).kind
    value = data.draw(st.sampled_from([*inv.BAD[kind], *_PATH_MORE[kind]]))
    o = _run_one(world, tmp_path, p, value)
    assert not o.problems, o.describe()


# Examples the fuzzers found, kept so they stay fixed (command, option name, value).
FOUND = [
    (("sweep",), "task", "[bold]x[/]"),  # --dry-run planned a task that is no builtin, file or dataset name
    (("sweep",), "rubric", "bogus"),  # --dry-run accepted an unknown rubric
    (("demo",), "model", "[bold]x[/]"),  # the store was opened and HarmOR built before the model was refused
    (("frontier",), "out", "{AFILE}/"),  # Path("afile/") is Path("afile"): the file was overwritten
    (("data", "export"), "out", "{AFILE}/"),
    (("import",), "source", ""),  # Path("") is Path("."): an empty path read as the current folder
    (("demo",), "plot", ""),
    (("judge",), "price_table", ""),
    (("judge",), "api_key_env", "NO_SUCH_ENV_VAR_ZZ"),  # a missing key variable passed when nothing was pending
    (("judge",), "base_url", "not a url"),  # a malformed URL passed when nothing was pending
    (("sweep",), "out_dir", "{AFILE}"),  # a file as the scripts folder: the dry run printed scripts "inside" it
    (("sweep",), "gres", "x" * 10_001),  # a 10,001-character GRES list went into the sbatch script
    (("evaluate",), "dtype", "[bold]x[/]"),  # an unknown dtype reached the model loader before it was refused
    (("merge",), "out", "{AFILE}"),  # an existing file as the output folder crashed with NotADirectoryError
    (("evaluate",), "model_name", "\x1b[31mred"),  # a control character was stored as the model name
    (("sweep",), "db", "{ADIR}"),  # a folder as --db passed a dry run
    (("demo",), "plot", "plot.bogus"),  # an unknown plot suffix was found only after training
    (("sweep",), "task", "no-such-thing-zz"),  # a well-formed name the store does not hold passed a dry run
]


@pytest.mark.parametrize("command,name,value", FOUND, ids=[f"{' '.join(c)} {n}={v!r}" for c, n, v in FOUND])
def test_found_by_fuzzing(world, tmp_path, command, name, value):
    p = next(q for q in inv.PARAMS if q.command == command and q.name == name)
    o = _run_one(world, tmp_path, p, value)
    assert not o.problems, o.describe()
