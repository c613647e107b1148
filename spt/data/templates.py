"""Loading and checking the HarmOR template files (`harmor_templates/<category>.yaml`).

Each file holds one category: sensitive words with their slots, risky request templates, safe
look-alike templates (each with an XSTest contrast type and a helpful response), and refusals.
Errors name the file and line of the offending node, e.g. `medical.yaml:42: ...`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from spt.errors import SptError

WORD_FIELDS = ("word", "gloss", "harm", "benign", "benign_type", "benign_tip", "figurative", "figurative_meaning")
# Slots that must contain the sensitive word, so every rendered prompt mentions it.
WORD_BEARING = ("harm", "benign", "figurative")
CONTRAST_TYPES = (
    "homonyms", "figurative_language", "safe_targets", "safe_contexts", "definitions",
    "real_discrimination_nonsense_group", "nonsense_discrimination_real_group", "historical_events",
    "privacy_public_figures", "privacy_fictional", "fiction",
)
MIN_RISKY, MIN_SAFE, MIN_REFUSALS = 12, 12, 8
_SLOT = re.compile(r"\{([A-Za-z_]+)\}")
_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_CATEGORY = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class Template:
    id: str
    text: str
    contrast_type: str | None = None  # safe templates only; may be "{benign_type}"
    response: str | None = None  # safe templates only


@dataclass
class CategoryTemplates:
    category: str
    description: str
    path: Path
    words: list[dict[str, str]]
    risky: list[Template]
    safe: list[Template]
    refusals: list[str]
    extra: dict = field(default_factory=dict)


def templates_dir() -> Path:
    """`$SPT_HARMOR_TEMPLATES`, else the packaged `spt/harmor_templates`, else the repository's folder."""
    env = os.environ.get("SPT_HARMOR_TEMPLATES")
    if env:
        return Path(env).expanduser()
    import spt

    pkg = Path(spt.__file__).resolve().parent
    for cand in (pkg / "harmor_templates", pkg.parent / "harmor_templates"):
        if cand.is_dir():
            return cand
    raise SptError("cannot find the HarmOR templates folder; set SPT_HARMOR_TEMPLATES or pass --templates DIR")


def _where(path: Path, node) -> str:
    line = node.start_mark.line + 1 if node is not None and getattr(node, "start_mark", None) else 0
    return f"{path.name}:{line}" if line else path.name


def _err(path: Path, node, msg: str) -> SptError:
    return SptError(f"malformed template {_where(path, node)}: {msg}")


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


def _text(path: Path, node, what: str) -> str:
    import yaml

    if not isinstance(node, yaml.ScalarNode) or node.tag.endswith(":null"):
        raise _err(path, node, f"{what} must be a text value")
    value = str(node.value).strip()
    if not value:
        raise _err(path, node, f"{what} is empty")
    return value


def _check_keys(path: Path, node, m: dict, required: tuple[str, ...], optional: tuple[str, ...], what: str) -> None:
    for key in required:
        if key not in m:
            raise _err(path, node, f"{what} is missing {key!r} (needs: {', '.join(required)})")
    for key, (knode, _v) in m.items():
        if key not in required and key not in optional:
            raise _err(path, knode, f"{what} has unknown key {key!r} (allowed: {', '.join(required + optional)})")


def _check_slots(path: Path, node, text: str, allowed: tuple[str, ...], what: str) -> None:
    for slot in _SLOT.findall(text):
        if slot not in allowed:
            raise _err(path, node, f"{what} uses unknown slot {{{slot}}} (allowed: "
                       + ", ".join("{" + s + "}" for s in allowed) + ")")
    stripped = _SLOT.sub("", text)
    if "{" in stripped or "}" in stripped:
        raise _err(path, node, f"{what} has an unbalanced brace")


def load_category(path: str | os.PathLike[str]) -> CategoryTemplates:
    """Parse and check one template file; raises SptError naming the file and line of the problem."""
    import yaml

    path = Path(path)
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
    top = _mapping(path, root, "the file")
    _check_keys(path, root, top, ("category", "words", "risky", "safe", "refusals"), ("description",), "the file")
    category = _text(path, top["category"][1], "category")
    if not _CATEGORY.match(category):
        raise _err(path, top["category"][1], f"category {category!r} must be lower_snake_case")
    if category != path.stem:
        raise _err(path, top["category"][1], f"category {category!r} must match the file name {path.stem!r}")
    description = _text(path, top["description"][1], "description") if "description" in top else ""

    words: list[dict[str, str]] = []
    seen_words: set[str] = set()
    for wnode in _seq(path, top["words"][1], "words"):
        m = _mapping(path, wnode, "a word entry")
        _check_keys(path, wnode, m, WORD_FIELDS, (), "a word entry")
        w = {k: _text(path, m[k][1], f"word field {k!r}") for k in WORD_FIELDS}
        if w["word"].lower() in seen_words:
            raise _err(path, wnode, f"word {w['word']!r} appears twice")
        seen_words.add(w["word"].lower())
        if w["benign_type"] not in CONTRAST_TYPES:
            raise _err(path, m["benign_type"][1], f"benign_type {w['benign_type']!r} is not a contrast type "
                       f"(one of: {', '.join(CONTRAST_TYPES)})")
        for k in WORD_BEARING:
            if w["word"].lower() not in w[k].lower():
                raise _err(path, m[k][1], f"{k} {w[k]!r} must contain the sensitive word {w['word']!r}")
        for k in WORD_FIELDS:
            if "{" in w[k] or "}" in w[k]:
                raise _err(path, m[k][1], f"word field {k!r} must not contain braces")
        words.append(w)
    if not words:
        raise _err(path, top["words"][1], "words is empty")

    def templates(key: str, safe: bool, minimum: int) -> list[Template]:
        out: list[Template] = []
        ids: set[str] = set()
        texts: set[str] = set()
        for tnode in _seq(path, top[key][1], key):
            m = _mapping(path, tnode, f"a {key} template")
            required = ("id", "text", "contrast_type", "response") if safe else ("id", "text")
            _check_keys(path, tnode, m, required, (), f"a {key} template")
            tid = _text(path, m["id"][1], "template id")
            if not _ID.match(tid):
                raise _err(path, m["id"][1], f"template id {tid!r} may use only letters, digits, '_' and '-'")
            if tid in ids:
                raise _err(path, m["id"][1], f"template id {tid!r} appears twice")
            ids.add(tid)
            body = _text(path, m["text"][1], "template text")
            if body in texts:
                raise _err(path, m["text"][1], "template text appears twice")
            texts.add(body)
            allowed = ("word", "benign", "figurative", "gloss", "harm") if safe else ("word", "harm")
            _check_slots(path, m["text"][1], body, allowed, f"{key} template {tid!r}")
            if not any(s in _SLOT.findall(body) for s in (("word", "benign", "figurative") if safe else
                                                          ("word", "harm"))):
                raise _err(path, m["text"][1], f"{key} template {tid!r} must mention the sensitive word through "
                           "{word}, {harm}, {benign} or {figurative}")
            tpl = Template(id=tid, text=body)
            if safe:
                if "{harm}" in body:
                    raise _err(path, m["text"][1], f"safe template {tid!r} must not use {{harm}}")
                ct = _text(path, m["contrast_type"][1], "contrast_type")
                if ct != "{benign_type}" and ct not in CONTRAST_TYPES:
                    raise _err(path, m["contrast_type"][1], f"contrast_type {ct!r} is not one of: "
                               f"{', '.join(CONTRAST_TYPES)} (or {{benign_type}})")
                resp = _text(path, m["response"][1], "response")
                _check_slots(path, m["response"][1], resp, WORD_FIELDS, f"response of {tid!r}")
                if "{harm}" in resp:
                    raise _err(path, m["response"][1], f"response of {tid!r} must not use {{harm}}")
                tpl.contrast_type, tpl.response = ct, resp
            out.append(tpl)
        if len(out) < minimum:
            raise _err(path, top[key][1], f"{key} has {len(out)} templates; at least {minimum} are needed")
        return out

    risky = templates("risky", False, MIN_RISKY)
    safe = templates("safe", True, MIN_SAFE)
    refusals: list[str] = []
    for rnode in _seq(path, top["refusals"][1], "refusals"):
        r = _text(path, rnode, "a refusal")
        _check_slots(path, rnode, r, ("word",), "a refusal")
        refusals.append(r)
    if len(refusals) < MIN_REFUSALS:
        raise _err(path, top["refusals"][1], f"refusals has {len(refusals)} entries; at least {MIN_REFUSALS} "
                   "are needed")
    return CategoryTemplates(category=category, description=description, path=path, words=words, risky=risky,
                             safe=safe, refusals=refusals)


def load_all(directory: str | os.PathLike[str] | None = None) -> dict[str, CategoryTemplates]:
    """Every `<category>.yaml` in the folder, checked, keyed by category (sorted)."""
    d = Path(directory).expanduser() if directory is not None else templates_dir()
    if not d.is_dir():
        raise SptError(f"template folder {d} does not exist; pass an existing folder of <category>.yaml files")
    files = sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise SptError(f"template folder {d} holds no .yaml files")
    cats: dict[str, CategoryTemplates] = {}
    for f in files:
        c = load_category(f)
        cats[c.category] = c
    return cats


def templates_hash(cats: dict[str, CategoryTemplates]) -> str:
    """Content hash of the template files used (recorded in the dataset's source)."""
    from spt.store.ids import content_id

    return content_id({name: c.path.read_text(encoding="utf-8") for name, c in sorted(cats.items())})


def render(text: str, slots: dict[str, str]) -> str:
    """Fill `{slot}` placeholders (only known slots; other braces were rejected by the check)."""
    return _SLOT.sub(lambda m: slots[m.group(1)], text)
