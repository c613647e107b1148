"""The frontier figure: every run, each group's frontier as a step line, λ labels and CI bars.

matplotlib is imported inside `plot_frontier` (Agg backend, headless) so importing spt stays fast.
"""

from __future__ import annotations

from pathlib import Path

from spt.errors import SptError
from spt.frontier.compute import FrontierResult
from spt.frontier.pareto import staircase

PLOT_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
LABEL_ALL_UP_TO = 60  # with more points, only frontier points get λ labels
MANY_POINTS = 500  # beyond this, dominated runs are drawn small, without CI bars


def plot_format(path: str | Path) -> str:
    fmt = PLOT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise SptError(f"`plot` {path}: the file must end in .png, .svg or .pdf")
    return fmt


def _errors(pts: list, attr: str, axis: int) -> list[list[float]]:
    """Asymmetric CI half-widths [[below...], [above...]] (0 where a point has no CI)."""
    lo, hi = [], []
    for p in pts:
        mv = getattr(p, attr)
        v = p.xy[axis]
        ok = mv.ci_low is not None and mv.ci_high is not None
        lo.append(max(v - mv.ci_low, 0.0) if ok else 0.0)
        hi.append(max(mv.ci_high - v, 0.0) if ok else 0.0)
    return [lo, hi]


def plot_frontier(result: FrontierResult, path: str | Path, *, title: str | None = None, dpi: int = 150) -> Path:
    """Write the frontier figure to `path` (.png, .svg or .pdf) and return the path."""
    path = Path(path).expanduser()
    fmt = plot_format(path)
    if not path.parent.exists():
        raise SptError(f"`plot` {path}: directory {path.parent} does not exist")
    if not result.points:
        raise SptError("nothing to plot: no run has both metrics")

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib import patheffects

    dirs = result.directions
    fig, ax = plt.subplots(figsize=(8, 5.6), layout="constrained")
    cmap = plt.get_cmap("tab10" if len(result.groups) <= 10 else "tab20")
    hv = {g.name: g for g in result.groups}
    label_all = len(result.points) <= LABEL_ALL_UP_TO
    many = len(result.points) > MANY_POINTS

    for gi, g in enumerate(result.groups):
        color = cmap(gi % cmap.N)
        pts = [p for p in result.points if p.group == g.name]
        # one errorbar call per group (not per point): 10k runs plot in seconds
        # with many runs only frontier points keep their CI bars (the cloud would hide everything)
        bar_pts = pts if many is False else [p for p in pts if p.on_group_frontier]
        xerr, yerr = _errors(bar_pts, "x", 0), _errors(bar_pts, "y", 1)
        if any(any(e) for e in xerr + yerr):
            ax.errorbar([p.xy[0] for p in bar_pts], [p.xy[1] for p in bar_pts], xerr=xerr, yerr=yerr, fmt="none",
                        ecolor=color, elinewidth=0.8, alpha=0.35, capsize=2 if len(pts) <= 200 else 0, zorder=1)
        front = [p for p in pts if p.on_group_frontier]
        rest = [p for p in pts if not p.on_group_frontier]
        if rest:
            ax.scatter([p.xy[0] for p in rest], [p.xy[1] for p in rest], s=6 if many else 30, color=color,
                       alpha=0.3 if many else 0.45,
                       edgecolors="none", zorder=2)
        ax.scatter([p.xy[0] for p in front], [p.xy[1] for p in front], s=52, color=color,
                   edgecolors="black", linewidths=0.6, zorder=4)
        verts = staircase([p.xy for p in front], dirs)
        ax.plot([v[0] for v in verts], [v[1] for v in verts], color=color, linewidth=1.6, zorder=3,
                label=f"{g.name}  (HV {g.hypervolume:.3g}, #{g.rank})" if g.hypervolume is not None else g.name)
        labels: dict[tuple[float, float], list[str]] = {}  # points at one spot share one label
        for p in pts:
            if not (label_all or p.on_frontier):
                continue
            if p.lam is not None:
                labels.setdefault(p.xy, []).append(f"λ={p.lam:g}")
            elif p.poison_ratio is not None and result.group_by != "poison":
                labels.setdefault(p.xy, []).append(f"p={p.poison_ratio:g}")
        for xy, texts in labels.items():
            texts = sorted(set(texts), key=lambda t: float(t.split("=")[1]))
            text = texts[0] if len(texts) == 1 else texts[0].split("=")[0] + "=" + ",".join(
                t.split("=")[1] for t in texts)
            ax.annotate(text, xy, xytext=(5, 5), textcoords="offset points", fontsize=7, color=color, zorder=6,
                        path_effects=[patheffects.withStroke(linewidth=2.2, foreground="white")])

    overall = result.frontier
    if len(hv) > 1 and overall:
        verts = staircase([p.xy for p in overall], dirs)
        ax.plot([v[0] for v in verts], [v[1] for v in verts], color="black", linestyle="--", linewidth=1.0,
                alpha=0.7, zorder=3, label="overall frontier")
        ax.scatter([p.xy[0] for p in overall], [p.xy[1] for p in overall], s=110, facecolors="none",
                   edgecolors="black", linewidths=1.0, zorder=4)
    if result.ref is not None and result.ref_source == "--ref":
        ax.scatter([result.ref[0]], [result.ref[1]], marker="x", color="gray", zorder=2, label="HV reference")

    ax.set_xlabel(result.x.axis_label())
    ax.set_ylabel(result.y.axis_label())
    corner = ("left" if dirs[0] == "lower" else "right", "bottom" if dirs[1] == "lower" else "top")
    ax.set_title(title or f"{result.y.name} vs {result.x.name} — {len(result.points)} runs, "
                 f"{len(overall)} non-dominated (best: {corner[1]} {corner[0]})", fontsize=10)
    if result.category != "all" or result.judge:
        extra = [f"category {result.category}"] if result.category != "all" else []
        if result.judge:
            extra.append(f"judge {result.judge['name']}")
        ax.text(0.99, 0.01, ", ".join(extra), transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
                color="gray")
    ax.grid(True, alpha=0.25)
    title = f"{result.group_by} (hypervolume, rank)" if result.ref is not None else result.group_by
    ax.legend(title=title, fontsize=8, title_fontsize=8, loc="best", framealpha=0.85)
    fig.savefig(path, format=fmt, dpi=dpi)
    plt.close(fig)
    return path
