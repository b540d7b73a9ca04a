"""The dashboard's and a flow page's charts as server-rendered SVG (no JavaScript): runs over time as
stacked bars by state, a line chart of durations, and a flow's grid of runs × tasks.

State fills come from ``presentation.colour``; axes and text use ``currentColor`` and the
stylesheet's variables (``--fg``, ``--muted``, ``--line``), so dark mode works.  Every mark has
a ``<title>`` (the browser's tooltip) and, where there is one, a link to what it counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape

from rayflow.presentation import RUN_STATES, colour

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 900, 220, 44, 26, 10
AXIS = 'class="chart-rule"'  # stroke from the stylesheet: the CSP allows no style attributes
TEXT = 'fill="currentColor" font-size="11"'
MUTED = 'class="chart-muted" font-size="11"'
CELL, GAP, KEY_W = 16, 2, 200


def stack_order(states: set[str]) -> list[str]:
    """The states of a stacked bar bottom up: the run states in the filter's order, then any other."""
    return [s for s in RUN_STATES if s in states] + sorted(states - set(RUN_STATES))


def _nice(top: int) -> int:
    """The y axis's top: ``top`` rounded up to 1, 2 or 5 times a power of ten."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if top <= step * m:
                return step * m
        step *= 10


def stacked_bars(
    bars: Sequence[Mapping[str, int]], labels: Sequence[str], link: Callable[[int, str | None], str], *, every: int = 1,
) -> str:
    """One bar per bucket, stacked by state, each part a link (``link(bucket, state)``) with a title,
    over a clear column the bar's height of the plot that links to all of its runs (``link(bucket,
    None)``); ``labels[i]`` names bucket i (every ``every``-th is written under the axis)."""
    n = max(len(bars), 1)
    top = _nice(max((sum(b.values()) for b in bars), default=0) or 1)
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - TOP - BOTTOM
    slot = plot_w / n
    bar_w = max(slot * 0.78, 1.0)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="bars" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-label="runs over time by state">'
    ]
    for frac in (0, 0.5, 1):  # the y axis: 0, half, top
        y = TOP + plot_h * (1 - frac)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}" {AXIS}/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" {MUTED}>{top * frac:g}</text>')
    for i, bar in enumerate(bars):
        x = LEFT + i * slot + (slot - bar_w) / 2
        total, y = sum(bar.values()), TOP + plot_h
        if total:
            out.append(
                f'<a href="{escape(link(i, None))}"><rect class="bucket" x="{x:.1f}" y="{TOP}" width="{bar_w:.1f}" '
                f'height="{plot_h}" fill="transparent" data-bucket="{i}" data-total="{total}">'
                f"<title>{escape(labels[i])}: {total} runs</title></rect></a>"
            )
        for state in stack_order({s for s, c in bar.items() if c}):
            count = bar[state]
            h = max(plot_h * count / top, 2.0)
            y -= h
            title = f"{labels[i]}: {count} {state} of {total} runs"
            out.append(
                f'<a href="{escape(link(i, state))}"><rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colour(state)}" data-bucket="{i}" data-state="{escape(state)}" data-count="{count}">'
                f"<title>{escape(title)}</title></rect></a>"
            )
        if i % every == 0:
            out.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle" {MUTED}>{escape(labels[i].split(" ")[-1])}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def lines(points: Sequence[tuple[str, Mapping[str, float | None]]], series: Sequence[str], unit: str = "s") -> str:
    """A line per name of ``series`` over ``points`` ((label, {name: value or None})), each point a dot
    with a title; the first series solid, the others dashed."""
    values = [v for _, p in points for k in series if (v := p.get(k)) is not None]
    if not values:
        return ""
    top = max(values) * 1.1 or 1.0
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(points) - 1, 1)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lines" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-label="durations of runs: {escape(", ".join(series))}">'
    ]
    for frac in (0, 0.5, 1):
        y = TOP + plot_h * (1 - frac)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}" {AXIS}/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" {MUTED}>{_short_number(top * frac)}{unit}</text>')
    for k, name in enumerate(series):
        dash = "" if k == 0 else ' stroke-dasharray="5 4"'
        xy = [
            (LEFT + i * step, TOP + plot_h * (1 - v / top), label, v)
            for i, (label, p) in enumerate(points) if (v := p.get(name)) is not None
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in xy)
        out.append(f'<polyline points="{path}" fill="none" stroke="currentColor" stroke-width="1.5"{dash}/>')
        for x, y, label, v in xy:
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="currentColor" data-series="{escape(name)}">'
                f"<title>{escape(label)}: {escape(name)} {v:.3f}{unit}</title></circle>"
            )
        out.append(f'<text x="{LEFT + 8 + k * 90}" y="{TOP + 10}" {TEXT}>{"—" if k == 0 else "- -"} {escape(name)}</text>')
    for i, (label, _) in enumerate(points):
        if i % max(len(points) // 10, 1) == 0:
            out.append(f'<text x="{LEFT + i * step:.1f}" y="{HEIGHT - 8}" text-anchor="middle" {MUTED}>{escape(label[5:])}</text>')
    out.append("</svg>")
    return "".join(out)


def _short_number(v: float) -> str:
    return f"{v:.0f}" if v >= 10 else f"{v:.2g}"


def grid(runs: Sequence[Mapping], keys: Sequence[str], link: Callable[[Mapping, str], str]) -> str:
    """Airflow's grid: a column per run (oldest to newest), a row per task key, each cell its
    task's state in that run (blank where the run has no such task), linked by ``link(run, key)``;
    a top row of the runs' own states, each linked to its run."""
    width = KEY_W + len(runs) * (CELL + GAP) + 8
    height = (len(keys) + 1) * (CELL + GAP) + 14
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="grid" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="runs by tasks">'
    ]

    def cell(x: float, y: float, state: str, href: str, title: str, attrs: str) -> None:
        out.append(
            f'<a href="{escape(href)}"><rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" rx="2" fill="{colour(state)}" '
            f'{AXIS} {attrs}><title>{escape(title)}</title></rect></a>'
        )

    out.append(f'<text x="{KEY_W - 8}" y="{CELL - 3}" text-anchor="end" {MUTED}>run</text>')
    for c, run in enumerate(runs):
        x = KEY_W + c * (CELL + GAP)
        cell(x, 0, run["state"], f"/runs/{run['run_id']}", f"run {run['run_id']}: {run['state']}",
             f'data-run="{escape(run["run_id"])}" data-state="{escape(run["state"])}"')
    for r, key in enumerate(keys):
        y = (r + 1) * (CELL + GAP) + 4
        label = key if len(key) <= 28 else key[:27] + "…"
        out.append(f'<text x="{KEY_W - 8}" y="{y + CELL - 4}" text-anchor="end" {TEXT}><title>{escape(key)}</title>{escape(label)}</text>')
        for c, run in enumerate(runs):
            row = run["by_task"].get(key)
            if row is None:
                continue
            x = KEY_W + c * (CELL + GAP)
            title = f"{key} in run {run['run_id']}: {row['state']}" + (f" ({row['error']})" if row.get("error") else "")
            cell(x, y, row["state"], link(run, key), title[:300],
                 f'data-run="{escape(run["run_id"])}" data-task="{escape(key)}" data-state="{escape(row["state"])}"')
    out.append("</svg>")
    return "".join(out)
