"""Server-side SVG charts for the reports page: one figure over the period buckets.

The console runs air-gapped and its Content-Security-Policy forbids inline script, so a chart is
plain SVG markup rendered here: no JavaScript, no external fonts or stylesheets. Labels can carry
user text (a team's or a doctor's name), so every text that reaches the markup goes through
`xml.sax.saxutils` escaping; nothing else is interpolated but numbers this module formats.

`None` in a series is a gap (no data for the bucket, e.g. an answered rate with no call offered),
drawn as no bar / a break in the line, and distinct from 0.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

# Plot margins: room for the axis labels left and the bucket labels below.
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 28, 40
_BAR_COLOUR = "#2f6fb0"
_GRID_COLOUR = "#d9d9d9"
_TEXT_COLOUR = "#333333"
# Chinese labels: the CJK faces the staff's machines have (Windows, macOS, Linux), then any.
_FONT = ("font-family=\"'Microsoft YaHei', 'PingFang SC', 'Noto Sans CJK SC',"
         " 'WenQuanYi Micro Hei', sans-serif\" font-size=\"11\"")


def _num(value: float) -> str:
    """A number as the chart writes it: no exponent, at most 2 decimals, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _nice_max(peak: float) -> float:
    """The top of the value axis: 1, 2, 2.5 or 5 × a power of ten, at or above the peak."""
    if peak <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(peak))
    for step in (1, 2, 2.5, 5, 10):
        if peak <= step * magnitude:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def svg_chart(title: str, series: Sequence[tuple[str, float | None]], *, unit: str = "",
              width: int = 640, height: int = 240, kind: str = "bar") -> str:
    """An SVG document (as text) charting `series` — (bucket label, value or None) in order.

    `kind` is "bar" or "line". Negative values are drawn as 0 (every report figure is a count,
    a rate or a duration). The SVG is `role="img"` with a <title> and <desc> naming the figure and
    listing every value, so a screen reader gets the numbers, not just a picture.
    """
    if kind not in ("bar", "line"):
        raise ValueError(f"unknown chart kind {kind!r}")
    width, height = max(int(width), 160), max(int(height), 120)
    # ids for aria-labelledby, unique per chart on a page yet the same for the same input (the
    # function stays pure: the same chart renders to the same bytes).
    uid = "chart-" + hashlib.sha256(repr((title, list(series), unit, kind)).encode()).hexdigest()[:12]
    suffix = f" {unit}" if unit else ""
    values = [None if v is None or not math.isfinite(v) else max(float(v), 0.0) for _, v in series]
    known = [v for v in values if v is not None]
    top = _nice_max(max(known, default=0.0))
    plot_w = width - _LEFT - _RIGHT
    plot_h = height - _TOP - _BOTTOM
    n = len(series)
    slot = plot_w / n if n else plot_w

    def y_of(v: float) -> float:
        return _TOP + plot_h - (v / top) * plot_h

    described = "；".join(f"{label}：{'无数据' if v is None else _num(v) + suffix}"
                         for (label, _), v in zip(series, values, strict=True))
    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img"'
        f' aria-labelledby="{uid}-title {uid}-desc">',
        f'<title id="{uid}-title">{escape(title)}</title>',
        f'<desc id="{uid}-desc">{escape(described or "无数据")}</desc>',
        f'<text x="{_LEFT}" y="16" {_FONT} font-weight="bold" fill="{_TEXT_COLOUR}">'
        f"{escape(title + (f'（{unit}）' if unit else ''))}</text>",
    ]
    # Grid lines and value-axis labels at 0, ¼, ½, ¾ and the top.
    for i in range(5):
        v = top * i / 4
        y = y_of(v)
        parts.append(f'<line x1="{_LEFT}" y1="{_num(y)}" x2="{_LEFT + plot_w}" y2="{_num(y)}"'
                     f' stroke="{_GRID_COLOUR}" stroke-width="1"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{_num(y + 4)}" text-anchor="end" {_FONT}'
                     f' fill="{_TEXT_COLOUR}" aria-hidden="true">{_num(v)}</text>')
    if not n:
        parts.append(f'<text x="{_num(_LEFT + plot_w / 2)}" y="{_num(_TOP + plot_h / 2)}"'
                     f' text-anchor="middle" {_FONT} fill="{_TEXT_COLOUR}">无数据</text>')
    # Bucket labels: at most about one per 48 px, so a month of days stays readable.
    every = max(1, math.ceil(n * 48 / plot_w)) if n else 1
    for i, (label, _) in enumerate(series):
        if i % every == 0:
            x = _LEFT + slot * (i + 0.5)
            parts.append(f'<text x="{_num(x)}" y="{height - _BOTTOM + 16}" text-anchor="middle"'
                         f' {_FONT} fill="{_TEXT_COLOUR}" aria-hidden="true">{escape(label)}</text>')
    if kind == "bar":
        bar_w = max(slot * 0.7, 1.0)
        for i, ((label, _), v) in enumerate(zip(series, values, strict=True)):
            if v is None:
                continue
            x = _LEFT + slot * i + (slot - bar_w) / 2
            y = y_of(v)
            tip = escape(f"{label}：{_num(v)}{suffix}")
            parts.append(f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(bar_w)}"'
                         f' height="{_num(_TOP + plot_h - y)}" fill="{_BAR_COLOUR}">'
                         f"<title>{tip}</title></rect>")
    else:
        # One polyline per run of known values: a None breaks the line instead of dropping to 0.
        run: list[str] = []
        runs: list[list[str]] = []
        for i, v in enumerate(values):
            if v is None:
                if run:
                    runs.append(run)
                run = []
                continue
            run.append(f"{_num(_LEFT + slot * (i + 0.5))},{_num(y_of(v))}")
        if run:
            runs.append(run)
        for points in runs:
            parts.append(f'<polyline points={quoteattr(" ".join(points))} fill="none"'
                         f' stroke="{_BAR_COLOUR}" stroke-width="2"/>')
        for i, ((label, _), v) in enumerate(zip(series, values, strict=True)):
            if v is None:
                continue
            tip = escape(f"{label}：{_num(v)}{suffix}")
            parts.append(f'<circle cx="{_num(_LEFT + slot * (i + 0.5))}" cy="{_num(y_of(v))}" r="3"'
                         f' fill="{_BAR_COLOUR}"><title>{tip}</title></circle>')
    # The axis line last, over the bars' feet.
    parts.append(f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_LEFT + plot_w}" y2="{_TOP + plot_h}"'
                 f' stroke="{_TEXT_COLOUR}" stroke-width="1"/>')
    parts.append("</svg>")
    return "\n".join(parts)
