"""The safety-vs-helpfulness plot of a persistence result: the four models on the test cases, with an
arrow from each single-objective model to its sequentially trained successor (S → S→H, H → H→S)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spt.errors import SptError

SUFFIXES = (".png", ".pdf", ".svg")
LABELS = {"safe": "S", "helpful": "H", "safe_then_help": "S→H", "help_then_safe": "H→S"}


def check_plot_path(path: str | Path) -> Path:
    """SptError unless `path` is a writable file path with a plot suffix (checked before any work)."""
    p = Path(path).expanduser()
    if not str(path).strip():
        raise SptError("--plot needs a file path such as persistence.png")
    if p.suffix.lower() not in SUFFIXES:
        raise SptError(f"--plot {p.name!r}: use a {', '.join(SUFFIXES)} file name")
    if p.is_dir():
        raise SptError(f"--plot {p} is a folder; pass a file path such as {p / 'persistence.png'}")
    if not p.parent.is_dir():
        raise SptError(f"--plot {p}: the folder {p.parent} does not exist; create it first")
    return p


def plot_persistence(result: Any, path: str | Path) -> Path:
    """Write the plot; the points are the mean scores over seeds on each seed's test cases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = check_plot_path(path)
    safety_metric, help_metric = (f.metric for f in result.figures)
    pts = {role: [m[help_metric], m[safety_metric]] for role, m in result.points.items()
           if help_metric in m and safety_metric in m}
    fig, ax = plt.subplots(figsize=(5, 4.2))
    for role, (x, y) in pts.items():
        ax.scatter([x], [y], s=40)
        ax.annotate(LABELS[role], (x, y), textcoords="offset points", xytext=(5, 5))
    for src, dst in (("safe", "safe_then_help"), ("helpful", "help_then_safe")):
        if src in pts and dst in pts:
            ax.annotate("", xy=pts[dst], xytext=pts[src], arrowprops={"arrowstyle": "->", "color": "gray"})
    ax.set_xlabel(f"helpfulness ({help_metric}, 0-3, test cases)")
    ax.set_ylabel(f"safety ({safety_metric}, 0-3, test cases)")
    title = ", ".join(f"{f.name} {f.value:.2f}" if f.value is not None else f"{f.name} undefined"
                      for f in result.figures)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(p)
    plt.close(fig)
    return p
