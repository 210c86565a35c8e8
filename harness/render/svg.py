"""Small inline SVG charts for the HTML report: no script, no library, nothing fetched.

Each function returns markup (`markupsafe.Markup`) with every piece of text escaped. Every chart is
an ``<svg class="chart" data-chart="...">`` with a ``<title>``, so a browser test can find it and a
screen reader can name it; each mark carries its own ``<title>`` as a tooltip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from harness.results.stats import percent
from harness.text import plural

__all__ = ["OUTCOME_COLORS", "Series", "ci_bar", "histogram", "line_chart", "stacked_bar"]

OUTCOME_COLORS = {
    "passed": "#4caf50",
    "failed": "#e53935",
    "error": "#8e24aa",
    "stalled": "#ce93d8",
    "deadlocked": "#b71c1c",
    "hung": "#f9a825",
    "crashed": "#263238",
    "undecided": "#90a4ae",
    "unsupported": "#90a4ae",
}
SERIES_COLORS = ["#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00897b", "#6d4c41", "#3949ab"]


def _svg(kind: str, title: str, width: int, height: int, body: str) -> Markup:
    return Markup(
        f'<svg class="chart" data-chart="{escape(kind)}" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )


def _pct(value: float) -> str:
    return percent(value)  # the format of every rate in every report


def ci_bar(rate: float, low: float, high: float, *, label: str, width: int = 180, height: int = 18) -> Markup:
    """The observed rate as a dot on a 0–100 % track, its 95 % interval as a band."""
    pad = 4
    span = width - 2 * pad

    def x(value: float) -> float:
        return pad + span * min(max(value, 0.0), 1.0)

    mid = height / 2
    body = (
        f'<line x1="{pad}" y1="{mid}" x2="{width - pad}" y2="{mid}" '
        'stroke="#ddd" stroke-width="6" stroke-linecap="round"/>'
        f'<line x1="{x(low):.1f}" y1="{mid}" x2="{x(high):.1f}" y2="{mid}" stroke="#90caf9" stroke-width="6">'
        f"<title>95 % interval: {_pct(low)} – {_pct(high)}</title></line>"
        f'<circle cx="{x(rate):.1f}" cy="{mid}" r="4.5" fill="#0d47a1"><title>observed: {_pct(rate)}</title></circle>'
    )
    return _svg(
        "ci", f"failure rate of {label}: {_pct(rate)} (95 % interval {_pct(low)} – {_pct(high)})", width, height, body
    )


def stacked_bar(segments: Sequence[tuple[str, int]], *, label: str, width: int = 260, height: int = 18) -> Markup:
    """One bar split by outcome (``segments`` are (outcome, count))."""
    total = sum(count for _, count in segments) or 1
    x = 0.0
    parts = []
    for name, count in segments:
        if not count:
            continue
        w = width * count / total
        color = OUTCOME_COLORS.get(name, "#999")
        parts.append(
            f'<rect x="{x:.2f}" y="0" width="{max(w, 0.5):.2f}" height="{height}" fill="{color}">'
            f"<title>{escape(name)}: {count} ({_pct(count / total)})</title></rect>"
        )
        x += w
    return _svg("kinds", f"outcomes of {label}", width, height, "".join(parts))


def histogram(
    bins: Sequence[tuple[str, int]], *, label: str, unit: str = "trial", width: int = 260, height: int = 40
) -> Markup:
    """Counts per bin, as columns (``bins`` are (bin label, count), in order; ``unit`` is what is
    counted: ``trial``, or ``schedule`` in controlled mode)."""
    if not bins:
        return _svg("durations", f"durations of {label}: none", width, height, "")
    top = max(count for _, count in bins) or 1
    w = width / len(bins)
    parts = []
    for index, (name, count) in enumerate(bins):
        h = (height - 2) * count / top
        parts.append(
            f'<rect x="{index * w + 1:.2f}" y="{height - h:.2f}" width="{max(w - 2, 1):.2f}" '
            f'height="{h:.2f}" fill="#5c6bc0">'
            f"<title>{escape(name)}: {count} {unit}{'' if count == 1 else 's'}</title></rect>"
        )
    return _svg("durations", f"distribution of {unit} durations of {label}", width, height, "".join(parts))


@dataclass(frozen=True)
class Series:
    """One line of a line chart: per x position, (rate, low, high, trials) or None for no data."""

    name: str
    points: Sequence[tuple[float, float, float, int] | None]


def line_chart(
    kind: str,
    title: str,
    x_labels: Sequence[str],
    series: Sequence[Series],
    *,
    x_title: str,
    width: int = 560,
    height: int = 240,
) -> Markup:
    """Failure rate (0–100 %) against categorical x positions, one line per series, with the 95 %
    interval of each point as a whisker and a legend below."""
    left, right, top, bottom = 44, 12, 10, 46
    legend = 16 * ((len(series) + 2) // 3)
    plot_w, plot_h = width - left - right, height - top - bottom
    count = max(len(x_labels), 1)

    def x(index: int) -> float:
        return left + (plot_w * (index + 0.5) / count)

    def y(value: float) -> float:
        return top + plot_h * (1 - min(max(value, 0.0), 1.0))

    parts = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#e0e0e0"/>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end" fill="#555">'
            f"{tick * 100:.0f}%</text>"
        )
    step = max(1, -(-len(x_labels) // 8))  # at most about eight labels, so they never overlap
    for index, name in enumerate(x_labels):
        if index % step:
            continue
        parts.append(
            f'<text x="{x(index):.1f}" y="{top + plot_h + 16}" font-size="11" text-anchor="middle" fill="#555">'
            f"{escape(name)}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 34}" font-size="12" text-anchor="middle" fill="#333">'
        f"{escape(x_title)}</text>"
    )
    for number, line in enumerate(series):
        color = SERIES_COLORS[number % len(SERIES_COLORS)]
        points = [(i, p) for i, p in enumerate(line.points) if p is not None]
        if len(points) > 1:
            path = " ".join(f"{x(i):.1f},{y(p[0]):.1f}" for i, p in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for i, (rate, low, high, trials) in points:
            parts.append(
                f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{y(low):.1f}" y2="{y(high):.1f}" '
                f'stroke="{color}" stroke-opacity="0.45" stroke-width="2"/>'
                f'<circle cx="{x(i):.1f}" cy="{y(rate):.1f}" r="3.5" fill="{color}">'
                f"<title>{escape(line.name)} at {escape(x_labels[i])}: {_pct(rate)} of {plural(trials, 'trial')} "
                f"(95 % interval {_pct(low)} – {_pct(high)})</title></circle>"
            )
    for number, line in enumerate(series):
        color = SERIES_COLORS[number % len(SERIES_COLORS)]
        lx = left + (number % 3) * (plot_w / 3)
        ly = height + 12 + 16 * (number // 3)
        parts.append(
            f'<rect x="{lx:.1f}" y="{ly - 9:.1f}" width="12" height="4" fill="{color}"/>'
            f'<text x="{lx + 16:.1f}" y="{ly:.1f}" font-size="11" fill="#333">{escape(line.name)}</text>'
        )
    return _svg(kind, title, width, height + legend, "".join(parts))
