"""Two small inline-SVG charts (a line plot and a histogram), so reports need no plotting library.

Output is plain SVG markup with every text escaped; sizes are in user units and the
``viewBox`` lets the browser scale it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Bins", "Marker", "histogram", "histogram_bins", "line_plot"]

_W, _H = 560, 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 16, 44
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


@dataclass(frozen=True)
class Marker:
    """A vertical line across the plot at ``x``, labelled."""

    x: float
    label: str
    colour: str = "#888"


def _scale(value: float, lo: float, hi: float, a: float, b: float) -> float:
    if hi == lo:
        return (a + b) / 2
    return a + (value - lo) / (hi - lo) * (b - a)


def _frame(element_id: str, title: str, x_label: str, y_label: str) -> list[str]:
    return [
        f'<svg id="{escape(element_id)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" '
        f'width="{_W}" height="{_H}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="#fff"/>',
        f'<text x="{(_LEFT + _W - _RIGHT) / 2}" y="{_H - 6}" text-anchor="middle" {_FONT}>{escape(x_label)}</text>',
        f'<text transform="translate(14 {(_TOP + _H - _BOTTOM) / 2}) rotate(-90)" text-anchor="middle" '
        f"{_FONT}>{escape(y_label)}</text>",
    ]


def _axes(x_ticks: Sequence[tuple[float, str]], y_ticks: Sequence[tuple[float, str]]) -> list[str]:
    """Axis lines and ticks; tick positions are already in pixels."""
    x0, x1, y0, y1 = _LEFT, _W - _RIGHT, _H - _BOTTOM, _TOP
    parts = [
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>',
    ]
    for px, label in x_ticks:
        parts.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + 4}" stroke="#333"/>')
        parts.append(f'<text x="{px:.1f}" y="{y0 + 16}" text-anchor="middle" {_FONT}>{escape(label)}</text>')
    for py, label in y_ticks:
        parts.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end" {_FONT}>{escape(label)}</text>')
    return parts


def _marker(m: Marker, px: float) -> str:
    return (
        f'<line x1="{px:.1f}" y1="{_TOP}" x2="{px:.1f}" y2="{_H - _BOTTOM}" stroke="{m.colour}" '
        f'stroke-dasharray="4 3"/><text x="{px + 3:.1f}" y="{_TOP + 10}" {_FONT} fill="{m.colour}">'
        f"{escape(m.label)}</text>"
    )


def line_plot(
    element_id: str,
    points: Sequence[tuple[float, float, str]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_range: tuple[float, float] = (0.0, 1.0),
    y_range: tuple[float, float] = (0.0, 1.0),
    markers: Sequence[Marker] = (),
    highlight: tuple[float, float] | None = None,
) -> str:
    """A polyline through ``(x, y, tooltip)`` points (drawn in the order given), with dots."""
    (xlo, xhi), (ylo, yhi) = x_range, y_range

    def px(x: float) -> float:
        return _scale(x, xlo, xhi, _LEFT, _W - _RIGHT)

    def py(y: float) -> float:
        return _scale(y, ylo, yhi, _H - _BOTTOM, _TOP)

    ticks = [i / 5 for i in range(6)]
    parts = _frame(element_id, title, x_label, y_label)
    parts += _axes(
        [(px(xlo + t * (xhi - xlo)), f"{xlo + t * (xhi - xlo):.0%}") for t in ticks],
        [(py(ylo + t * (yhi - ylo)), f"{ylo + t * (yhi - ylo):.0%}") for t in ticks],
    )
    parts += [_marker(m, px(m.x)) for m in markers]
    if points:
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#2563eb" stroke-width="2"/>')
        for x, y, tip in points:
            parts.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="#2563eb">'
                f"<title>{escape(tip)}</title></circle>"
            )
    if highlight is not None:
        hx, hy = highlight
        parts.append(
            f'<circle cx="{px(hx):.1f}" cy="{py(hy):.1f}" r="7" fill="none" stroke="#dc2626" stroke-width="2"/>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


@dataclass(frozen=True)
class Bins:
    edges: list[float]
    """``len(counts) + 1`` bin edges; bin i is ``[edges[i], edges[i+1])``, the last one closed."""
    counts: list[int]


def histogram_bins(values: Sequence[float], max_bins: int = 20) -> Bins:
    """Equal-width bins with a 1-2-5 width, at most ``max_bins`` of them."""
    if not values:
        return Bins(edges=[0.0, 1.0], counts=[0])
    lo, hi = min(values), max(values)
    span = hi - lo
    if span > 0:
        width = _nice(span / max_bins)
    elif lo > 0:
        width = _nice(lo / 10)  # all values equal: one bin around them
    else:
        width = 1.0
    start = math.floor(lo / width) * width
    n = max(1, math.floor((hi - start) / width) + 1)
    edges = [start + i * width for i in range(n + 1)]
    counts = [0] * n
    for v in values:
        counts[min(n - 1, int((v - start) // width))] += 1
    return Bins(edges=edges, counts=counts)


def _nice(raw: float) -> float:
    """The smallest 1, 2 or 5 × 10^k that is >= ``raw``."""
    exponent = math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if step * 10**exponent >= raw:
            return float(step * 10**exponent)
    return float(10 ** (exponent + 1))


def histogram(
    element_id: str,
    bins: Bins,
    *,
    title: str,
    x_label: str,
    y_label: str = "cases",
    unit: str = "",
    markers: Sequence[Marker] = (),
) -> str:
    """Bars of ``bins``, with optional vertical markers (e.g. percentiles)."""
    xlo, xhi = bins.edges[0], bins.edges[-1]
    highest = max(max(bins.counts, default=0), 1)
    y_step = max(1, int(_nice(highest / 5)))
    top = math.ceil(highest / y_step) * y_step  # the axis ends on a tick

    def px(x: float) -> float:
        return _scale(x, xlo, xhi, _LEFT, _W - _RIGHT)

    def py(y: float) -> float:
        return _scale(y, 0, top, _H - _BOTTOM, _TOP)

    step = max(1, math.ceil(len(bins.edges) / 8))
    x_ticks = [(px(e), f"{e:g}{unit}") for e in bins.edges[::step]]
    y_ticks = [(py(c), str(c)) for c in range(0, top + 1, y_step)]
    parts = _frame(element_id, title, x_label, y_label)
    parts += _axes(x_ticks, y_ticks)
    for i, count in enumerate(bins.counts):
        x0, x1 = px(bins.edges[i]), px(bins.edges[i + 1])
        tip = f"{bins.edges[i]:g}–{bins.edges[i + 1]:g}{unit}: {count}"
        parts.append(
            f'<rect x="{x0 + 1:.1f}" y="{py(count):.1f}" width="{max(x1 - x0 - 2, 1):.1f}" '
            f'height="{py(0) - py(count):.1f}" fill="#60a5fa"><title>{escape(tip)}</title></rect>'
        )
    parts += [_marker(m, px(m.x)) for m in markers if xlo <= m.x <= xhi]
    parts.append("</svg>")
    return "\n".join(parts)
