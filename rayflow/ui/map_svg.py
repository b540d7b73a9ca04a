"""A map's throughput over time as SVG, from its chunk rows (never its items): the map's span cut
into bins, each bin a bar of the items whose chunk ended in it, stacked by state (fills from
``presentation.colour``), its height items per second.  Axes and text use ``currentColor`` and
the stylesheet's variables, so the chart follows the page's light or dark scheme."""

from __future__ import annotations

from html import escape

from rayflow.presentation import colour, sort_key

BINS = 40
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 760, 200, 64, 28, 12


def chunk_stats(chunks: list[dict]) -> dict | None:
    """Chunk durations: count, median, p95 and the slowest (seconds); None without timed chunks."""
    spans = sorted(c["finished_at"] - c["started_at"] for c in chunks if c["started_at"] is not None and c["finished_at"] is not None)
    if not spans:
        return None
    return {
        "chunks": len(spans), "median": spans[len(spans) // 2], "p95": spans[min(len(spans) - 1, int(len(spans) * 0.95))],
        "slowest": spans[-1],
    }


def throughput_bins(chunks: list[dict], bins: int = BINS) -> tuple[float, float, list[dict[str, int]]]:
    """(start, bin seconds, items by state per bin): each chunk's final items in the bin its chunk ended in."""
    timed = [c for c in chunks if c["finished_at"] is not None]
    if not timed:
        return 0.0, 0.0, []
    start = min(c["started_at"] if c["started_at"] is not None else c["finished_at"] for c in timed)
    end = max(c["finished_at"] for c in timed)
    width = max(end - start, 1e-3) / bins
    out: list[dict[str, int]] = [{} for _ in range(bins)]
    for c in timed:
        at = min(bins - 1, int((c["finished_at"] - start) / width))
        for state, n in c["counts"].items():
            if state not in ("RETRYING", "PAUSED") and n > 0:  # items sent to run again end in a later chunk
                out[at][state] = out[at].get(state, 0) + n
    return start, width, out


def throughput_svg(chunks: list[dict]) -> str:
    """The chart, or "" when no chunk has ended."""
    start, width, bins = throughput_bins(chunks)
    if not bins:
        return ""
    peak = max(sum(b.values()) for b in bins) / width or 1.0
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    bar_w = plot_w / len(bins)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="throughput" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11" role="img" '
        'aria-label="items per second over the map\'s span, by state">',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="currentColor" stroke-opacity=".5"/>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="currentColor" stroke-opacity=".5"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT + plot_w}" y2="{TOP}" stroke="var(--line, #ddd)" stroke-dasharray="3 3"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" fill="currentColor">{_rate(peak)}/s</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end" fill="currentColor">0</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 8}" fill="currentColor">0</text>',
        f'<text x="{LEFT + plot_w}" y="{HEIGHT - 8}" text-anchor="end" fill="currentColor">{seconds(width * len(bins))}</text>',
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" text-anchor="middle" fill="var(--muted, #666)">'
        f'items per second, by the time their chunk ended ({seconds(width)} bins)</text>',
    ]
    for i, counts in enumerate(bins):
        y = TOP + plot_h
        total = sum(counts.values())
        for state in sorted(counts, key=sort_key, reverse=True):  # ok at the bottom, failed on top
            h = counts[state] / width / peak * plot_h
            y -= h
            tip = f"{start_offset(i, width)}: {counts[state]} {state} of {total} items ({counts[state] / width:.1f}/s)"
            out.append(
                f'<rect class="bin" data-bin="{i}" data-state="{escape(state)}" data-items="{counts[state]}" '
                f'x="{LEFT + i * bar_w + 0.5:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 0.5):.1f}" height="{h:.1f}" '
                f'fill="{colour(state)}"><title>{escape(tip)}</title></rect>'
            )
    out.append("</svg>")
    return "".join(out)


def start_offset(i: int, width: float) -> str:
    return f"{seconds(i * width)} to {seconds((i + 1) * width)}"


def seconds(value: float) -> str:
    """A span for an axis: ``12.5 s``, or ``3.2 ms`` under a second."""
    return f"{value:.1f} s" if value >= 1 else f"{value * 1000:.1f} ms"


def _rate(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:.0f}" if value >= 10 else f"{value:.2f}"
