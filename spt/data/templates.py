"""Loading and checking the HarmOR v2 template files (`harmor_templates/`).

The folder holds one `<category>.yaml` per harm category and two shared files:

- `<category>.yaml`: sensitive words, each with at least two *requests*. A request is a harmful
  verb phrase (`harm`, answered with a refusal), its benign twin (`benign`, same sensitive word as a
  whole word, an XSTest contrast type) and the helpful `answer` written for that twin.
- `_wrappers.yaml`: the sentences a request is asked in (`risky` wrappers take `{harm}`, `safe`
  wrappers take `{benign}`).
- `_refusals.yaml`: refusal phrasings, the targets of harmful requests; an optional `by_category`
  section gives a category its own phrasings, used for it instead of the shared ones (self-harm
  requests are declined with support and a pointer to help, and only they are).
- `_synonyms.yaml` (optional): groups of a category's sensitive words that mean the same thing, plus
  other terms for them. A group is assigned to one pool as a unit, and the leakage check looks for every
  form of every term in the other pools' prompts (`spt.data.leakage`).

Words, wrappers and refusals are each assigned to exactly one pool at build time
(`spt.data.harmor`), so nothing here may appear twice: the loader rejects a repeated word (across
categories too), a repeated request or answer, and a repeated wrapper or refusal. Errors name the file
and line, e.g. `medical.yaml:42: ...`. The format is documented in `docs/harmor.md`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from spt.errors import SptError

VERSION = 2
CONTRAST_TYPES = (
    "homonyms", "figurative_language", "safe_targets", "safe_contexts", "definitions",
    "real_discrimination_nonsense_group", "nonsense_discrimination_real_group", "historical_events",
    "privacy_public_figures", "privacy_fictional", "fiction",
)
MIN_WORDS, MIN_REQUESTS = 30, 2
MIN_WRAPPERS, MIN_REFUSALS = 8, 60
_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_CATEGORY = re.compile(r"^[a-z][a-z0-9_]*$")
_WORD = re.compile(r"^[a-z]+(?:-[a-z]+)*$")
SHARED_FILES = ("_wrappers.yaml", "_refusals.yaml")
SYNONYMS_FILE = "_synonyms.yaml"
MIN_CATEGORY_REFUSALS = 8  # two per pool
_TERM = re.compile(r"^[a-z]+(?:-[a-z]+)*$")


def whole_word(word: str) -> re.Pattern[str]:
    """A case-insensitive pattern matching `word` only as a whole word.

    Letters, digits and hyphens continue a word, so "pot" is not in "repot", "pots" or "pot-bellied".
    """
    return re.compile(r"(?<![A-Za-z0-9-])" + re.escape(word) + r"(?![A-Za-z0-9-])", re.IGNORECASE)


def has_whole_word(text: str, word: str) -> bool:
    return bool(whole_word(word).search(text))


@dataclass(frozen=True)
class Request:
    harm: str
    benign: str
    contrast: str
    answer: str


@dataclass(frozen=True)
class Word:
    word: str
    gloss: str
    requests: tuple[Request, ...]


@dataclass
class CategoryTemplates:
    category: str
    description: str
    path: Path
    words: list[Word]


@dataclass(frozen=True)
class Wrapper:
    id: str
    text: str


@dataclass(frozen=True)
class SynonymGroup:
    """Sensitive words of one category that mean the same thing (one pool), and other terms for them."""

    category: str
    words: tuple[str, ...]
    terms: tuple[str, ...]


@dataclass
class HarmorTemplates:
    """Everything a HarmOR build renders: categories (sorted by name), wrappers and refusals."""

    categories: dict[str, CategoryTemplates]
    risky: list[Wrapper]
    safe: list[Wrapper]
    refusals: list[str]
    folder: Path
    category_refusals: dict[str, list[str]] = field(default_factory=dict)
    synonyms: list[SynonymGroup] = field(default_factory=list)

    def files(self) -> list[Path]:
        extra = [self.folder / SYNONYMS_FILE] if (self.folder / SYNONYMS_FILE).is_file() else []
        return [self.folder / f for f in SHARED_FILES] + extra + [c.path for _, c in sorted(self.categories.items())]

    def refusals_for(self, category: str) -> list[str]:
        """The refusal phrasings a category's harmful requests are answered with."""
        return self.category_refusals.get(category) or self.refusals


def templates_dir() -> Path:
    """`$SPT_HARMOR_TEMPLATES`, else the packaged `spt/harmor_templates`, else the repository's folder."""
    from spt.env import env_path

    env = env_path("SPT_HARMOR_TEMPLATES")
    if env is not None:
        return env
    import spt

    pkg = Path(spt.__file__).resolve().parent
    for cand in (pkg / "harmor_templates", pkg.parent / "harmor_templates"):
        if cand.is_dir():
            return cand
    raise SptError("cannot find the HarmOR templates folder; set SPT_HARMOR_TEMPLATES or pass `templates` DIR")


def _where(path: Path, node) -> str:
    line = node.start_mark.line + 1 if node is not None and getattr(node, "start_mark", None) else 0
    return f"{path.name}:{line}" if line else path.name


def _err(path: Path, node, msg: str) -> SptError:
    return SptError(f"malformed template {_where(path, node)}: {msg}")


def _compose(path: Path):
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SptError(f"cannot read template file {path} ({e})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SptError(f"malformed template {path.name}{line}: YAML syntax error: {problem}") from None
    if root is None:
        raise SptError(f"malformed template {path.name}: the file is empty")
    return root


def _mapping(path: Path, node, what: str) -> dict:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        raise _err(path, node, f"{what} must be a mapping")
    out: dict = {}
    for k, v in node.value:
        if not isinstance(k, yaml.ScalarNode):
            raise _err(path, k, f"{what} has a non-text key")
        if k.value in out:
            raise _err(path, k, f"{what} repeats the key {k.value!r}")
        out[k.value] = (k, v)
    return out


def _seq(path: Path, node, what: str) -> list:
    import yaml

    if not isinstance(node, yaml.SequenceNode):
        raise _err(path, node, f"{what} must be a list")
    return list(node.value)


def _text(path: Path, node, what: str, *, braces: bool = False) -> str:
    import yaml

    if not isinstance(node, yaml.ScalarNode) or node.tag.endswith(":null"):
        raise _err(path, node, f"{what} must be a text value")
    value = " ".join(str(node.value).split())
    if not value:
        raise _err(path, node, f"{what} is empty")
    if not braces and ("{" in value or "}" in value):
        raise _err(path, node, f"{what} must not contain braces")
    return value


def _check_keys(path: Path, node, m: dict, required: tuple[str, ...], optional: tuple[str, ...], what: str) -> None:
    for key in required:
        if key not in m:
            raise _err(path, node, f"{what} is missing {key!r} (needs: {', '.join(required)})")
    for key, (knode, _v) in m.items():
        if key not in required and key not in optional:
            raise _err(path, knode, f"{what} has unknown key {key!r} (allowed: {', '.join(required + optional)})")


def _check_version(path: Path, top: dict) -> None:
    if "version" not in top:
        raise SptError(f"malformed template {path.name}: no 'version: 2' (HarmOR v1 templates are no longer "
                       "built; convert them to the v2 format described in docs/harmor.md)")
    node = top["version"][1]
    if _text(path, node, "version") != str(VERSION):
        raise _err(path, node, f"version must be {VERSION} (this spt builds HarmOR v{VERSION})")


def load_category(path: str | os.PathLike[str]) -> CategoryTemplates:
    """Parse and check one category file; raises SptError naming the file and line of the problem."""
    path = Path(path)
    root = _compose(path)
    top = _mapping(path, root, "the file")
    _check_version(path, top)
    _check_keys(path, root, top, ("version", "category", "words"), ("description",), "the file")
    category = _text(path, top["category"][1], "category")
    if not _CATEGORY.match(category):
        raise _err(path, top["category"][1], f"category {category!r} must be lower_snake_case")
    if category != path.stem:
        raise _err(path, top["category"][1], f"category {category!r} must match the file name {path.stem!r}")
    description = _text(path, top["description"][1], "description") if "description" in top else ""

    words: list[Word] = []
    seen_words: set[str] = set()
    for wnode in _seq(path, top["words"][1], "words"):
        m = _mapping(path, wnode, "a word entry")
        _check_keys(path, wnode, m, ("word", "gloss", "requests"), (), "a word entry")
        word = _text(path, m["word"][1], "word")
        if not _WORD.match(word):
            raise _err(path, m["word"][1], f"word {word!r} must be one lowercase word (letters, hyphens)")
        if word in seen_words:
            raise _err(path, m["word"][1], f"word {word!r} appears twice")
        seen_words.add(word)
        gloss = _text(path, m["gloss"][1], "gloss")
        requests: list[Request] = []
        for rnode in _seq(path, m["requests"][1], f"requests of {word!r}"):
            r = _mapping(path, rnode, f"a request of {word!r}")
            _check_keys(path, rnode, r, ("harm", "benign", "contrast", "answer"), (), f"a request of {word!r}")
            vals = {k: _text(path, r[k][1], f"{k} of {word!r}") for k in ("harm", "benign", "contrast", "answer")}
            for k in ("harm", "benign"):
                if not has_whole_word(vals[k], word):
                    raise _err(path, r[k][1], f"{k} {vals[k]!r} must contain the sensitive word {word!r} as a "
                               "whole word")
            if vals["contrast"] not in CONTRAST_TYPES:
                raise _err(path, r["contrast"][1], f"contrast {vals['contrast']!r} is not one of: "
                           f"{', '.join(CONTRAST_TYPES)}")
            requests.append(Request(**vals))
        if len(requests) < MIN_REQUESTS:
            raise _err(path, m["requests"][1], f"word {word!r} has {len(requests)} request(s); at least "
                       f"{MIN_REQUESTS} are needed")
        if len({q.harm for q in requests}) < len(requests):
            raise _err(path, m["requests"][1], f"word {word!r} repeats a harmful request")
        words.append(Word(word=word, gloss=gloss, requests=tuple(requests)))
    if len(words) < MIN_WORDS:
        raise _err(path, top["words"][1], f"words has {len(words)} entries; at least {MIN_WORDS} are needed")
    return CategoryTemplates(category=category, description=description, path=path, words=words)


def load_wrappers(path: Path) -> tuple[list[Wrapper], list[Wrapper]]:
    """The risky and safe wrappers of `_wrappers.yaml` (each with exactly one request slot)."""
    root = _compose(path)
    top = _mapping(path, root, "the file")
    _check_keys(path, root, top, ("version", "risky", "safe"), (), "the file")
    _check_version(path, top)
    out: dict[str, list[Wrapper]] = {}
    for key, slot in (("risky", "{harm}"), ("safe", "{benign}")):
        ws: list[Wrapper] = []
        for node in _seq(path, top[key][1], key):
            m = _mapping(path, node, f"a {key} wrapper")
            _check_keys(path, node, m, ("id", "text"), (), f"a {key} wrapper")
            wid = _text(path, m["id"][1], "wrapper id")
            text = _text(path, m["text"][1], "wrapper text", braces=True)
            if not _ID.match(wid):
                raise _err(path, m["id"][1], f"wrapper id {wid!r} may use only letters, digits, '_' and '-'")
            rest = text.replace(slot, "", 1)
            if slot not in text or "{" in rest or "}" in rest:
                raise _err(path, m["text"][1], f"{key} wrapper {wid!r} must contain {slot} exactly once and no "
                           "other braces")
            if any(w.id == wid for w in ws):
                raise _err(path, m["id"][1], f"wrapper id {wid!r} appears twice")
            if any(w.text == text for w in ws):
                raise _err(path, m["text"][1], "wrapper text appears twice")
            ws.append(Wrapper(id=wid, text=text))
        if len(ws) < MIN_WRAPPERS:
            raise _err(path, top[key][1], f"{key} has {len(ws)} wrappers; at least {MIN_WRAPPERS} are needed")
        out[key] = ws
    return out["risky"], out["safe"]


def _phrasings(path: Path, node, what: str, seen: set[str], minimum: int) -> list[str]:
    out: list[str] = []
    for item in _seq(path, node, what):
        r = _text(path, item, "a refusal")
        if r in seen:
            raise _err(path, item, "refusal appears twice")
        seen.add(r)
        out.append(r)
    if len(out) < minimum:
        raise _err(path, node, f"{what} has {len(out)} entries; at least {minimum} are needed")
    return out


def load_refusals(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The shared refusal phrasings and each `by_category` list (no phrasing twice in the file)."""
    root = _compose(path)
    top = _mapping(path, root, "the file")
    _check_keys(path, root, top, ("version", "refusals"), ("by_category",), "the file")
    _check_version(path, top)
    seen: set[str] = set()
    refusals = _phrasings(path, top["refusals"][1], "refusals", seen, MIN_REFUSALS)
    by_category: dict[str, list[str]] = {}
    if "by_category" in top:
        for name, (knode, vnode) in _mapping(path, top["by_category"][1], "by_category").items():
            if not _CATEGORY.match(name):
                raise _err(path, knode, f"by_category key {name!r} must be a category name (lower_snake_case)")
            by_category[name] = _phrasings(path, vnode, f"by_category {name!r}", seen, MIN_CATEGORY_REFUSALS)
    return refusals, by_category


def load_synonyms(path: Path, categories: dict[str, CategoryTemplates]) -> list[SynonymGroup]:
    """`_synonyms.yaml`: per category, groups of terms; each group names at least two sensitive words of
    that category or one word and other terms; a word is in at most one group."""
    root = _compose(path)
    top = _mapping(path, root, "the file")
    _check_keys(path, root, top, ("version", "groups"), (), "the file")
    _check_version(path, top)
    groups: list[SynonymGroup] = []
    grouped: dict[str, int] = {}
    all_words = {w.word: c.category for c in categories.values() for w in c.words}
    for name, (knode, vnode) in _mapping(path, top["groups"][1], "groups").items():
        if name not in categories:
            raise _err(path, knode, f"groups names the unknown category {name!r}; valid: "
                       f"{', '.join(sorted(categories))}")
        own = {w.word for w in categories[name].words}
        for gnode in _seq(path, vnode, f"groups of {name!r}"):
            terms = [_text(path, x, "a synonym").lower() for x in _seq(path, gnode, f"a group of {name!r}")]
            for x in terms:
                if not _TERM.match(x):
                    raise _err(path, gnode, f"synonym {x!r} must be one lowercase word (letters, hyphens)")
                if x in all_words and x not in own:
                    raise _err(path, gnode, f"{x!r} is a sensitive word of {all_words[x]}, not of {name}; a group "
                               "stays inside one category")
            words = tuple(dict.fromkeys(x for x in terms if x in own))
            extra = tuple(dict.fromkeys(x for x in terms if x not in own))
            if not words or len(words) + len(extra) < 2:
                raise _err(path, gnode, f"a group of {name!r} needs a sensitive word of {name} and at least one "
                           "more term")
            for w in words:
                if w in grouped:
                    raise _err(path, gnode, f"word {w!r} is in two synonym groups; merge them")
                grouped[w] = len(groups)
            groups.append(SynonymGroup(category=name, words=words, terms=extra))
    return groups


def load_all(directory: str | os.PathLike[str] | None = None) -> HarmorTemplates:
    """The whole template folder, checked: every `<category>.yaml` plus the shared files."""
    d = Path(directory).expanduser() if directory is not None else templates_dir()
    if not d.is_dir():
        raise SptError(f"template folder {d} does not exist; pass an existing folder of <category>.yaml files")
    for shared in SHARED_FILES:
        if not (d / shared).is_file():
            raise SptError(f"template folder {d} has no {shared}; a HarmOR v2 folder needs "
                           f"{' and '.join(SHARED_FILES)}")
    files = sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
                   and not p.name.startswith("_"))
    if not files:
        raise SptError(f"template folder {d} holds no <category>.yaml files")
    cats: dict[str, CategoryTemplates] = {}
    owner: dict[str, str] = {}
    requests: dict[str, str] = {}
    for f in files:
        c = load_category(f)
        for w in c.words:
            if w.word in owner:
                raise SptError(f"malformed template {f.name}: word {w.word!r} is also in {owner[w.word]}.yaml; "
                               "a sensitive word belongs to one category")
            owner[w.word] = c.category
            for q in w.requests:
                for text in (q.harm, q.benign, q.answer):
                    if text in requests and requests[text] != f"{c.category}/{w.word}":
                        raise SptError(f"malformed template {f.name}: {text!r} (word {w.word!r}) also appears "
                                       f"under {requests[text]}; every request and answer must be distinct")
                    requests[text] = f"{c.category}/{w.word}"
        cats[c.category] = c
    risky, safe = load_wrappers(d / "_wrappers.yaml")
    refusals, by_category = load_refusals(d / "_refusals.yaml")
    for name in by_category:
        if name not in cats:
            raise SptError(f"malformed template _refusals.yaml: by_category names the category {name!r}, which has "
                           f"no {name}.yaml here; remove it from by_category or add the file")
    synonyms = load_synonyms(d / SYNONYMS_FILE, cats) if (d / SYNONYMS_FILE).is_file() else []
    return HarmorTemplates(categories=cats, risky=risky, safe=safe, refusals=refusals, folder=d,
                           category_refusals=by_category, synonyms=synonyms)


def templates_hash(t: HarmorTemplates) -> str:
    """Content hash of the template files used (recorded in the dataset's source)."""
    return files_hash(t.files())


def files_hash(files: list[Path]) -> str:
    from spt.store.ids import content_id

    return content_id({p.name: p.read_text(encoding="utf-8") for p in files})


def folder_files(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """The files a folder's build reads, in `HarmorTemplates.files()` order, without parsing them."""
    d = Path(directory).expanduser() if directory is not None else templates_dir()
    cats = sorted(p for p in d.iterdir()
                  if p.suffix in (".yaml", ".yml") and p.is_file() and not p.name.startswith("_"))
    extra = [d / SYNONYMS_FILE] if (d / SYNONYMS_FILE).is_file() else []
    return [d / f for f in SHARED_FILES] + extra + cats


def render(wrapper: Wrapper, phrase: str) -> str:
    """A wrapper with its request slot filled."""
    return re.sub(r"\{(harm|benign)\}", lambda _m: phrase, wrapper.text)
