"""Server-side SVG line charts (training curves): plain markup, every text escaped, no scripts."""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    out = []
    v = start
    while v <= hi + step * 1e-9 and len(out) < 50:
        out.append(round(v, 12))
        v += step
    return out


def fmt(v: float) -> str:
    return f"{v:.4g}"


def line_chart(series: dict[str, list[tuple[float, float]]], *, title: str, x_label: str = "step",
               width: int = 560, height: int = 260) -> str:
    """An SVG chart of one or more named series [(x, y)], with axes, ticks and a legend."""
    pts = [p for s in series.values() for p in s]
    ml, mr, mt, mb = 56, 12, 28, 40
    w, h = width - ml - mr, height - mt - mb
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
             f'<text x="{ml}" y="16" class="chart-title" font-size="13" font-weight="600">{escape(title)}</text>']
    if not pts:
        parts.append(f'<text x="{ml}" y="{mt + h / 2}" font-size="12">no values</text></svg>')
        return "".join(parts)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.05 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    else:
        pad = (y1 - y0) * 0.05
        y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return ml + (x - x0) / (x1 - x0) * w

    def sy(y: float) -> float:
        return mt + h - (y - y0) / (y1 - y0) * h

    parts.append(f'<rect x="{ml}" y="{mt}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>')
    for t in nice_ticks(y0, y1):
        parts.append(f'<line x1="{ml}" x2="{ml + w}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#eee"/>'
                     f'<text x="{ml - 4}" y="{sy(t) + 4:.1f}" font-size="11" text-anchor="end">{fmt(t)}</text>')
    for t in nice_ticks(x0, x1):
        parts.append(f'<text x="{sx(t):.1f}" y="{mt + h + 14}" font-size="11" text-anchor="middle">{fmt(t)}</text>')
    parts.append(f'<text x="{ml + w / 2}" y="{height - 6}" font-size="11" text-anchor="middle">'
                 f'{escape(x_label)}</text>')
    for k, (name, s) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        if not s:
            continue
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(s))
        parts.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1.8" class="series" '
                     f'data-name="{escape(name)}"><title>{escape(name)}</title></path>')
        if len(s) <= 60:
            for x, y in s:
                parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2" fill="{color}">'
                             f'<title>{escape(name)} step {fmt(x)}: {fmt(y)}</title></circle>')
        lx = ml + 8 + 150 * (k % 3)
        ly = mt + 14 + 14 * (k // 3)
        parts.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="3" fill="{color}"/>'
                     f'<text x="{lx + 14}" y="{ly - 3}" font-size="11">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
