"""Task data (the performance axis): built-in offline tasks with exact-match scorers, and imported ones.

`builtin:arithmetic`: one- and two-step word problems; answer is a number; the scorer takes the first
number in the prediction. `builtin:sentiment`: short reviews labelled positive/negative; the scorer
takes the first label word in the prediction. Both are deterministic for a seed, and train and test
prompts never overlap.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spt.data.items import make_item
from spt.errors import SptError

BUILTIN_TASKS = ("builtin:arithmetic", "builtin:arithmetic-steps", "builtin:arithmetic-think", "builtin:sentiment")
DEFAULT_N_TRAIN = 500
DEFAULT_N_TEST = 200
DEFAULT_N_DEV = 100

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


_MARKED = re.compile(r"(?:answer(?:\s+is)?\s*[:=]?|=)\s*\$?(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)


def _to_float(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def final_number(text: str) -> float | None:
    """The final answer of a reply: the last number after "answer is", "answer:" or "=", else the last number.

    "12 + 5 = 17" -> 17 (not 12); "The answer is 19." -> 19; "1,234 apples" -> 1234. This is the
    convention of lm-eval's flexible GSM8K extraction (last number), with an explicit marker winning.
    """
    text = text or ""
    marked = _MARKED.findall(text)
    if marked:
        return _to_float(marked[-1])
    found = _NUMBER.findall(text)
    return _to_float(found[-1]) if found else None


def score_number(prediction: str, answer: str) -> bool:
    """Exact match on the final number of the prediction (see `final_number`)."""
    got, want = final_number(prediction), final_number(answer)
    return got is not None and want is not None and abs(got - want) < 1e-9


def score_sentiment(prediction: str, answer: str) -> bool:
    """Exact match on the first label word (positive/negative) in the prediction."""
    m = re.search(r"\b(positive|negative)\b", (prediction or "").lower())
    return m is not None and m.group(1) == (answer or "").strip().lower()


def _norm(text: str) -> str:
    text = (text or "").strip().lower()
    text = text.translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


def score_exact(prediction: str, answer: str) -> bool:
    """Generic exact match after normalising case, punctuation and spaces; numbers compare as numbers.

    Tolerates a short sentence around the answer: "The answer is Paris." matches "Paris".
    """
    if _NUMBER.fullmatch((answer or "").strip().replace(" ", "")):
        return score_number(prediction, answer)
    p, a = _norm(prediction), _norm(answer)
    if not a:
        return False
    if p == a:
        return True
    first_line = _norm((prediction or "").strip().splitlines()[0]) if (prediction or "").strip() else ""
    for prefix in ("", "the answer is ", "answer ", "the answer ", "it is ", "its "):
        if first_line.startswith(prefix + a) and (len(first_line) == len(prefix + a)
                                                  or not first_line[len(prefix + a)].isalnum()):
            return True
    return False


@dataclass
class Task:
    """A task: `build(seed, n_train, n_test)` gives items; `score(prediction, answer)` is exact match."""

    name: str
    builder: Callable[..., list[dict[str, Any]]]
    scorer: Callable[[str, str], bool]
    description: str = ""
    defaults: dict[str, int] = field(default_factory=lambda: {"n_train": DEFAULT_N_TRAIN, "n_test": DEFAULT_N_TEST})
    splits: tuple[str, ...] | None = ("train", "test")  # a built-in's splits; None: whatever the stored items have

    def build(self, seed: int = 0, n_train: int = DEFAULT_N_TRAIN, n_test: int = DEFAULT_N_TEST) -> list[dict]:
        for label, n in (("n_train", n_train), ("n_test", n_test)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise SptError(f"{label} must be a whole number >= 0, not {n!r}")
        return self.builder(seed=seed, n_train=n_train, n_test=n_test)

    def score(self, prediction: str, answer: str) -> bool:
        return bool(self.scorer(prediction, answer))


_NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kofi", "Lena", "Mateo",
          "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Vik", "Wen", "Yara", "Zoe"]
_OBJECTS = ["apples", "marbles", "stickers", "books", "pencils", "cookies", "stamps", "shells", "cards", "coins",
            "oranges", "balloons", "buttons", "candles", "toy cars"]


def _arith_problem(rng: random.Random) -> tuple[str, int]:
    name, obj = rng.choice(_NAMES), rng.choice(_OBJECTS)
    kind = rng.randrange(5)
    if kind == 0:
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        return f"{name} has {a} {obj} and gets {b} more. How many {obj} does {name} have now?", a + b
    if kind == 1:
        a = rng.randint(10, 90)
        b = rng.randint(1, a - 1)
        return f"{name} had {a} {obj} and gave {b} away. How many {obj} are left?", a - b
    if kind == 2:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        return f"{name} buys {a} bags with {b} {obj} in each bag. How many {obj} is that in total?", a * b
    if kind == 3:
        b, q = rng.randint(2, 9), rng.randint(2, 12)
        return f"{name} shares {b * q} {obj} equally among {b} friends. How many {obj} does each friend get?", q
    a, b = rng.randint(5, 50), rng.randint(2, 30)
    c = rng.randint(1, a + b - 1)
    return (f"{name} has {a} {obj}, finds {b} more, then loses {c}. How many {obj} does {name} have now?",
            a + b - c)


def _arith_steps_problem(rng: random.Random) -> tuple[str, str, int]:
    """A word problem with its work shown: the target writes the sum before the answer.

    Bare targets ("The answer is 17.") teach a 135M model a format and a constant (it answers one number to
    everything); a target that spells out `a + b = c` teaches it to copy the operands and compute.
    """
    name, obj = rng.choice(_NAMES), rng.choice(_OBJECTS)
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randint(2, 40), rng.randint(2, 30)
        prompt, work, ans = f"{name} has {a} {obj} and gets {b} more. How many {obj} does {name} have now?", \
            f"{a} + {b} = {a + b}", a + b
    elif kind == 1:
        a = rng.randint(10, 60)
        b = rng.randint(1, a - 1)
        prompt, work, ans = f"{name} had {a} {obj} and gave {b} away. How many {obj} are left?", \
            f"{a} - {b} = {a - b}", a - b
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        prompt, work, ans = f"{name} buys {a} bags with {b} {obj} in each bag. How many {obj} is that in total?", \
            f"{a} x {b} = {a * b}", a * b
    return prompt, f"{work}. The answer is {ans}.", ans


def _build_arithmetic_steps(seed: int = 0, n_train: int = DEFAULT_N_TRAIN, n_test: int = DEFAULT_N_TEST) -> list[dict]:
    def draw(rng: random.Random) -> tuple[str, str, str]:
        prompt, response, ans = _arith_steps_problem(rng)
        return prompt, response, str(ans)

    return _distinct_items("arithmetic-steps", seed, n_train, n_test, draw, n_dev=DEFAULT_N_DEV)


def _build_arithmetic_think(seed: int = 0, n_train: int = DEFAULT_N_TRAIN, n_test: int = DEFAULT_N_TEST) -> list[dict]:
    """The reasoning task (`--stage reason`): the arithmetic-steps problems with the work as a thought,
    `<think>12 + 5 = 17.</think>The answer is 17.`, so a reasoning model's answer is scored apart from its
    thinking (`spt evaluate --reasoning think`)."""
    def draw(rng: random.Random) -> tuple[str, str, str]:
        prompt, response, ans = _arith_steps_problem(rng)
        work = response.split(". The answer is")[0]
        return prompt, f"<think>{work}.</think>The answer is {ans}.", str(ans)

    return _distinct_items("arithmetic-think", seed, n_train, n_test, draw, n_dev=DEFAULT_N_DEV)


def _distinct_items(what: str, seed: int, n_train: int, n_test: int,
                    draw: Callable[[random.Random], tuple[str, str, str]], n_dev: int = 0) -> list[dict]:
    """`n_train + n_dev + n_test` task items with distinct prompts from `draw(rng) -> (prompt, response, answer)`.

    The first `n_test` distinct prompts become the test split and the next `n_dev` the dev split (for
    choosing a protocol without looking at test), so no two splits share a prompt and the test split does
    not change when only n_train or n_dev does.
    """
    rng = random.Random(f"{what}:{seed}")
    seen: set[str] = set()
    items: list[dict] = []
    attempts = 0
    total = n_train + n_dev + n_test
    while len(items) < total:
        attempts += 1
        if attempts > 100 * total + 1000:
            raise SptError(f"cannot generate {total} distinct {what} items; ask for fewer")
        prompt, response, answer = draw(rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        split = "test" if len(items) < n_test else "dev" if len(items) < n_test + n_dev else "train"
        items.append(make_item(prompt=prompt, response=response, answer=answer, label="task", category=what,
                               split=split))
    return items[n_test:] + items[:n_test]


def _build_arithmetic(seed: int = 0, n_train: int = DEFAULT_N_TRAIN, n_test: int = DEFAULT_N_TEST) -> list[dict]:
    def draw(rng: random.Random) -> tuple[str, str, str]:
        prompt, ans = _arith_problem(rng)
        return prompt, f"The answer is {ans}.", str(ans)

    return _distinct_items("arithmetic", seed, n_train, n_test, draw)


_SUBJECTS = ["The movie", "The restaurant", "This phone", "The hotel", "The book", "The concert", "This laptop",
             "The service", "The coffee", "The game", "The museum tour", "This jacket", "The delivery",
             "The new album", "The hiking trail"]
_POS = ["wonderful", "fantastic", "delightful", "excellent", "charming", "superb", "lovely", "great", "brilliant",
        "impressive", "pleasant", "outstanding"]
_NEG = ["terrible", "awful", "disappointing", "boring", "dreadful", "poor", "frustrating", "mediocre", "annoying",
        "unpleasant", "horrible", "bland"]
_POS_TAIL = ["and I would happily recommend it", "and I'll definitely come back", "and it made my day",
             "and it was worth every penny", "and I loved every minute", ""]
_NEG_TAIL = ["and I would not recommend it", "and I won't come back", "and it ruined my day",
             "and it was a waste of money", "and I regretted it", ""]


def _build_sentiment(seed: int = 0, n_train: int = DEFAULT_N_TRAIN, n_test: int = DEFAULT_N_TEST) -> list[dict]:
    def draw(rng: random.Random) -> tuple[str, str, str]:
        label = rng.choice(("positive", "negative"))
        adj = rng.choice(_POS if label == "positive" else _NEG)
        tail = rng.choice(_POS_TAIL if label == "positive" else _NEG_TAIL)
        review = f"{rng.choice(_SUBJECTS)} was {adj}{', ' + tail if tail else ''}."
        prompt = f"Is the sentiment of this review positive or negative?\nReview: {review}"
        return prompt, f"The sentiment is {label}.", label

    return _distinct_items("sentiment", seed, n_train, n_test, draw)


_BUILTINS: dict[str, Task] = {
    "builtin:arithmetic": Task("builtin:arithmetic", _build_arithmetic, score_number,
                               "arithmetic word problems with a numeric answer"),
    "builtin:arithmetic-steps": Task("builtin:arithmetic-steps", _build_arithmetic_steps, score_number,
                                     "addition, subtraction and times-table word problems, work shown",
                                     splits=("train", "dev", "test")),
    "builtin:arithmetic-think": Task("builtin:arithmetic-think", _build_arithmetic_think, score_number,
                                     "the arithmetic-steps problems with the work as a <think> thought "
                                     "(the reasoning task of --stage reason)", splits=("train", "dev", "test")),
    "builtin:sentiment": Task("builtin:sentiment", _build_sentiment, score_sentiment,
                              "short reviews labelled positive or negative"),
}


def _stored_task(store, name: str) -> Task:
    from spt.data.items import load_items, resolve_dataset

    d = resolve_dataset(store, name)
    if d.kind != "task":
        raise SptError(f"dataset {name!r} is a {d.kind} dataset, not a task; import it with `kind` task")
    dataset_id = d.id

    def build(seed: int = 0, n_train: int = DEFAULT_N_TRAIN, n_test: int = DEFAULT_N_TEST) -> list[dict]:
        return load_items(store, dataset_id)

    return Task(d.name, build, score_exact, f"imported task dataset {d.id}", splits=None)


def get_task(name: str, store=None) -> Task:
    """A task by name: `builtin:arithmetic`, `builtin:sentiment`, or an imported task dataset's name/id.

    Imported tasks are looked up in `store` (default: the default store, if it exists); their `build`
    returns the stored items with their splits and `score` is a normalised exact match.
    """
    key = (name or "").strip()
    if key in _BUILTINS:
        return _BUILTINS[key]
    if key in ("arithmetic", "sentiment"):
        return _BUILTINS["builtin:" + key]
    if key.startswith("builtin:"):
        raise SptError(f"unknown built-in task {name!r}; built-in tasks: {', '.join(BUILTIN_TASKS)}")
    if store is None:
        from spt.paths import default_db_path
        from spt.store import open_store

        path = default_db_path()
        if not path.exists():
            raise SptError(f"unknown task {name!r}; use {', '.join(BUILTIN_TASKS)} or import one with "
                           "`spt data import FILE --kind task --name NAME`")
        store = open_store(path)
    try:
        return _stored_task(store, key)
    except SptError as e:
        raise SptError(f"unknown task {name!r}: {e}; built-in tasks: {', '.join(BUILTIN_TASKS)}") from None


def ensure_task_dataset(store, task_name: str, seed: int = 0) -> str:
    """Store a built-in task's items as a dataset (once per content) or return an imported task's id."""
    from spt.data.items import resolve_dataset, store_items

    key = (task_name or "").strip()
    if key in ("arithmetic", "sentiment"):
        key = "builtin:" + key
    if key in _BUILTINS:
        task = _BUILTINS[key]
        items = task.build(seed=seed)
        source = {"builder": key, "seed": int(seed), "n_train": DEFAULT_N_TRAIN, "n_test": DEFAULT_N_TEST}
        if task.splits and "dev" in task.splits:
            source["n_dev"] = DEFAULT_N_DEV
        return store_items(store, key, "task", items, source)
    d = resolve_dataset(store, key)
    if d.kind != "task":
        raise SptError(f"dataset {task_name!r} is a {d.kind} dataset, not a task; import it with `kind` task")
    return d.id
