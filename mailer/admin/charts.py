"""Small charts drawn on the server as inline SVG: no script, no library, no CDN.

Each chart scales to its container (a viewBox and width 100%), names itself for screen
readers (role="img" with a title and a description), and the page puts the same figures in
a table beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 600, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 36, 36


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    values: Sequence[int]


def _nice_max(value: int) -> int:
    """A top for the y axis: four equal whole steps, each 1, 2 or 5 x 10^n, reaching `value`."""
    needed = max(1, -(-value // 4))  # the smallest whole step that reaches it in four
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= needed:
                return 4 * step * scale
        scale *= 10


def _frame(title: str, description: str, top: int, x_labels: Sequence[str],
           series: Sequence[Series]) -> list[str]:
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title><desc>{escape(description)}</desc>",
    ]
    plot_height = HEIGHT - TOP - BOTTOM
    for i in range(5):  # grid lines and their values
        y = TOP + plot_height - plot_height * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#d0d5dd" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="15" '
                     f'fill="#475467">{top * i // 4}</text>')
    if x_labels:
        shown = {0, len(x_labels) - 1, (len(x_labels) - 1) // 2}
        for i in sorted(shown):
            x = _x(i, len(x_labels))
            anchor = "start" if i == 0 else "end" if i == len(x_labels) - 1 else "middle"
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 10}" text-anchor="{anchor}" '
                         f'font-size="15" fill="#475467">{escape(x_labels[i])}</text>')
    x = LEFT
    for one in series:  # the legend, along the top
        parts.append(f'<rect x="{x}" y="8" width="14" height="14" fill="{one.color}"/>')
        parts.append(f'<text x="{x + 20}" y="21" font-size="16" fill="#1f2328">'
                     f"{escape(one.label)}</text>")
        x += 36 + 9 * len(one.label)
    return parts


def _x(index: int, count: int) -> float:
    if count <= 1:
        return LEFT + (WIDTH - LEFT - RIGHT) / 2
    return LEFT + (WIDTH - LEFT - RIGHT) * index / (count - 1)


def _y(value: int, top: int) -> float:
    plot_height = HEIGHT - TOP - BOTTOM
    return TOP + plot_height - plot_height * value / top


def line_chart(title: str, description: str, x_labels: Sequence[str],
               series: Sequence[Series]) -> Markup:
    """Lines over the same x positions (e.g. cumulative counts over time)."""
    top = _nice_max(max((max(s.values, default=0) for s in series), default=0))
    parts = _frame(title, description, top, x_labels, series)
    for one in series:
        points = " ".join(f"{_x(i, len(one.values)):.1f},{_y(v, top):.1f}"
                          for i, v in enumerate(one.values))
        if points:
            parts.append(f'<polyline fill="none" stroke="{one.color}" stroke-width="2.5" '
                         f'points="{points}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(title: str, description: str, x_labels: Sequence[str],
              series: Sequence[Series]) -> Markup:
    """Bars grouped by x position, one bar a series (e.g. per week: joined, left)."""
    top = _nice_max(max((max(s.values, default=0) for s in series), default=0))
    parts = _frame(title, description, top, x_labels, series)
    count = max((len(s.values) for s in series), default=0)
    if count:
        slot = (WIDTH - LEFT - RIGHT) / count
        bar = max(1.0, slot * 0.8 / len(series))
        for k, one in enumerate(series):
            for i, value in enumerate(one.values):
                if not value:
                    continue
                x = LEFT + slot * i + slot * 0.1 + bar * k
                y = _y(value, top)
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                             f'height="{HEIGHT - BOTTOM - y:.1f}" fill="{one.color}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
