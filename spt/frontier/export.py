"""Frontier exports: CSV, JSON, Markdown and LaTeX tables carrying run and judge identity."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from spt.errors import SptError
from spt.frontier.compute import FrontierResult, Point

FORMATS = ("csv", "json", "md", "latex")
_SUFFIXES = {".csv": "csv", ".json": "json", ".md": "md", ".markdown": "md", ".tex": "latex", ".latex": "latex"}

ID_COLUMNS = ("run_id", "group", "kind", "defense", "lam", "poison_ratio", "model", "task", "seed", "status",
              "configuration", "n_seeds", "seeds")
METRIC_FIELDS = ("value", "ci_low", "ci_high", "ci_method", "n", "n_unscored", "preset", "judge_id",
                 "evaluation_id")


def columns(result: FrontierResult) -> list[str]:
    """Flat column names: identity, then `<x>`, `<x>_ci_low`, ... `<y>...`, then frontier flags."""
    cols = list(ID_COLUMNS)
    for info in (result.x, result.y):
        cols += [info.name if f == "value" else f"{info.name}_{f}" for f in METRIC_FIELDS]
    return cols + ["on_frontier", "on_group_frontier"]


def point_row(result: FrontierResult, p: Point) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": p.run_id, "group": p.group, "kind": p.kind, "defense": p.defense, "lam": p.lam,
        "poison_ratio": p.poison_ratio, "model": p.model, "task": p.task, "seed": p.seed, "status": p.status,
        "configuration": p.configuration, "n_seeds": len(p.runs) or 1,
        "seeds": " ".join(str(s) for s in p.seeds) if p.seeds else "",
    }
    for info, mv in ((result.x, p.x), (result.y, p.y)):
        for f in METRIC_FIELDS:
            row[info.name if f == "value" else f"{info.name}_{f}"] = getattr(mv, f)
    row["on_frontier"] = p.on_frontier
    row["on_group_frontier"] = p.on_group_frontier
    return row


def rows(result: FrontierResult, all_points: bool = False) -> list[dict[str, Any]]:
    return [point_row(result, p) for p in result.rows(all_points)]


def to_dict(result: FrontierResult, all_points: bool = False) -> dict[str, Any]:
    """Everything about a frontier as plain JSON-able data."""
    return {
        "x": {**result.x.to_dict(), "category": result.category},
        "y": {**result.y.to_dict(), "category": result.category},
        "judge": result.judge,
        "where": result.where,
        "group_by": result.group_by,
        "ref": list(result.ref) if result.ref else None,
        "ref_source": result.ref_source,
        "setting": result.setting,
        "setting_description": result.setting_description,
        "per_seed": result.per_seed,
        "n_runs": result.n_runs,
        "n_points": len(result.points),
        "n_frontier": len(result.frontier),
        "excluded": result.excluded,
        "groups": [{"name": g.name, "rank": g.rank, "n_points": g.n_points, "n_frontier": g.n_frontier,
                    "hypervolume": g.hypervolume, "hv_ci_low": g.hv_low, "hv_ci_high": g.hv_high,
                    "distinct_from_next": g.distinct_from_next} for g in result.groups],
        "all_points": all_points,
        "columns": columns(result),
        "rows": rows(result, all_points),
    }


def to_csv(result: FrontierResult, all_points: bool = False) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns(result), lineterminator="\n")
    w.writeheader()
    for r in rows(result, all_points):
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()


def to_json(result: FrontierResult, all_points: bool = False) -> str:
    return json.dumps(to_dict(result, all_points), indent=2, ensure_ascii=False) + "\n"


def fmt_num(v: float | None) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.4g}"


def fmt_ci(lo: float | None, hi: float | None) -> str:
    return "" if lo is None or hi is None else f"[{fmt_num(lo)}, {fmt_num(hi)}]"


def table_cells(result: FrontierResult, all_points: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the human tables (Markdown, LaTeX): one row per exported point."""
    xl, yl = result.x, result.y
    header = ["run_id", "group", "defense", "λ", "poison", "model",
              f"{xl.name} {xl.arrow}", f"{xl.name} 95% CI", f"{xl.name} n",
              f"{yl.name} {yl.arrow}", f"{yl.name} 95% CI", f"{yl.name} n", "judge_id"]
    if all_points:
        header.append("frontier")
    body = []
    for p in result.rows(all_points):
        judges = sorted({j for j in (p.x.judge_id, p.y.judge_id) if j})
        cells = [p.run_id, p.group, p.defense or "", fmt_num(p.lam), fmt_num(p.poison_ratio), p.model or "",
                 fmt_num(p.x.value), fmt_ci(p.x.ci_low, p.x.ci_high), str(p.x.n),
                 fmt_num(p.y.value), fmt_ci(p.y.ci_low, p.y.ci_high), str(p.y.n), " ".join(judges)]
        if all_points:
            cells.append("yes" if p.on_frontier else "")
        body.append(cells)
    return header, body


def _hv_lines(result: FrontierResult) -> list[tuple[str, str, str]]:
    lines = []
    for g in result.groups:
        ci = f" {fmt_ci(g.hv_low, g.hv_high)}" if g.hv_low is not None else ""
        lines.append((str(g.rank or ""), g.name, fmt_num(g.hypervolume) + ci))
    return lines


def to_markdown(result: FrontierResult, all_points: bool = False) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    header, body = table_cells(result, all_points)
    what = "All runs" if all_points else "Non-dominated runs"
    lines = [f"{what}: {result.y.name} ({result.y.better}) vs {result.x.name} ({result.x.better}), "
             f"category {result.category}" + (f", judge {result.judge['name']}" if result.judge else ""), ""]
    lines.append("| " + " | ".join(esc(h) for h in header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for cells in body:
        lines.append("| " + " | ".join(esc(c) for c in cells) + " |")
    lines += ["", f"Hypervolume per {result.group_by} (reference {result.ref_source}: "
                  f"{', '.join(fmt_num(v) for v in result.ref) if result.ref else 'none'})", ""]
    lines += ["| rank | " + result.group_by + " | hypervolume |", "|---|---|---|"]
    lines += [f"| {r} | {esc(n)} | {h} |" for r, n, h in _hv_lines(result)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "λ": r"$\lambda$", "↑": r"$\uparrow$", "↓": r"$\downarrow$"}


def latex_escape(s: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in s)


def to_latex(result: FrontierResult, all_points: bool = False) -> str:
    """A booktabs table (needs \\usepackage{booktabs}) plus the hypervolume ranking."""
    header, body = table_cells(result, all_points)
    what = "All runs" if all_points else "Non-dominated runs"
    caption = (f"{what}: {result.y.name} ({result.y.better}) vs {result.x.name} ({result.x.better}), "
               f"category {result.category}")
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * 6 + "r" * (len(header) - 6) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in cells) + r" \\" for cells in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + latex_escape(caption) + "}", r"\end{table}", "",
              r"\begin{tabular}{rlr}", r"\toprule",
              "rank & " + latex_escape(result.group_by) + r" & hypervolume \\", r"\midrule"]
    lines += [f"{r} & {latex_escape(n)} & {h}" + r" \\" for r, n, h in _hv_lines(result)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def export_format(fmt: str | None, out: str | Path | None) -> str:
    """The export format from --export, else from --out's suffix; SptError when neither says."""
    if fmt:
        f = fmt.strip().lower()
        f = {"markdown": "md", "tex": "latex"}.get(f, f)
        if f not in FORMATS:
            raise SptError(f"`export` {fmt!r} is not a format; choose one of: {', '.join(FORMATS)}")
        return f
    if out is not None:
        f = _SUFFIXES.get(Path(out).suffix.lower())
        if f is None:
            raise SptError(f"`out` {out}: cannot tell the format from the suffix; add `export` "
                           f"{'|'.join(FORMATS)} or use .csv/.json/.md/.tex")
        return f
    raise SptError("no export format; pass `export` csv|json|md|latex")


def render(result: FrontierResult, fmt: str, all_points: bool = False) -> str:
    return {"csv": to_csv, "json": to_json, "md": to_markdown, "latex": to_latex}[fmt](result, all_points)


def write_export(result: FrontierResult, fmt: str, out: str | Path, all_points: bool = False) -> Path:
    out = Path(out).expanduser()
    if out.is_dir():
        raise SptError(f"`out` {out} is a directory; name a file")
    if not out.parent.exists():
        raise SptError(f"`out` {out}: directory {out.parent} does not exist")
    out.write_text(render(result, fmt, all_points), encoding="utf-8")
    return out
