"""A run's timeline as a Gantt chart (SVG): one row per task, on a time axis.

What a row holds, from what the engine records:

- each *attempt* is a bar of its own, from its start to its end, coloured by how it
  ended (``presentation.colour``): a retried task has two bars, never one long one;
- a *wait* is a thin hatched band: the retry delay between an attempt that ended
  RETRYING and the next one, or the time a task spent PENDING for a limit's slot
  (a PENDING transition with a message) until it started;
- a *map* row holds its chunks' bars (red where all its items failed; a chunk some of
  whose items failed gets a red band as high as their share, at least a line), packed into up to ``LANES`` lanes where they
  overlap (per-chunk records: a 10^6-item map costs what its chunks do, and at most
  ``MAX_BARS`` are drawn, the rest counted);
- an attempt still running reaches to ``now``.

Retries must not stretch the chart (Prefect #22220): a stretch of time in which
nothing ran that is longer than a fifth of the run (a long retry delay, a wait for a
slot) is cut to a narrow break marked with how long it was, so the work around it
keeps its width.  Axis, text and grid lines use ``currentColor`` (light and dark).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from html import escape
from typing import Any

from rayflow.presentation import ACTIVE, FAILED, colour, took

ROW_H, LANE_H, LABEL_W, CHART_W, MARGIN, AXIS_H, BREAK_W = 22, 7, 230, 880, 12, 26, 40
LANES = 4
MAX_BARS = 5000  # chunk bars drawn per timeline (the rest are counted)
BREAK_SHARE = 0.2  # an idle stretch longer than this share of the run is cut


def bars_of(run: Mapping[str, Any], tasks: list[dict], now: float) -> tuple[dict[str, list[tuple]], int]:
    """Per task, its bars ``(start, end, kind, state, label)`` (kind: attempt, wait, chunk),
    and how many chunk bars were left out."""
    bars: dict[str, list[tuple]] = {t["task"]: [] for t in tasks}
    running: dict[str, tuple[float, int]] = {}
    waiting: dict[str, tuple[float, str]] = {}
    for t in run.get("transitions", []):
        key, state = t["task_key"], t["state"]
        row = bars.setdefault(key, [])
        if state == "PENDING" and t["message"] and t["at"] is not None:
            waiting[key] = (t["at"], t["message"] if t["message"].startswith("waiting") else f"waiting: {t['message']}")
        elif state == "RUNNING" and (t["started_at"] or t["at"]) is not None:
            start = t["started_at"] or t["at"]  # an attempt's RUNNING row is stamped when it starts
            if key in waiting:
                since, why = waiting.pop(key)
                row.append((since, start, "wait", "PENDING", why))
            running[key] = (start, t["attempt"] or 1)
        elif state not in ACTIVE - {"RETRYING", "LOOPED"} and t["started_at"] is not None:
            end = t["finished_at"] if t["finished_at"] is not None else t["at"]
            attempt = t["attempt"] or running.get(key, (0, 1))[1]
            start = t["started_at"]
            if row and row[-1][3] == "LOOPED":  # rf.Loop: a bar per iteration, from the end of the one before
                start = max(start, row[-1][1])
            row.append((start, end, "attempt", state, f"attempt {attempt}: {state}"))
            running.pop(key, None)
            if state == "RETRYING":
                waiting[key] = (end, "retry delay")
    for key, (start, attempt) in running.items():
        bars[key].append((start, max(now, start), "attempt", "RUNNING", f"attempt {attempt}: RUNNING"))
    left_out = 0
    drawn = 0
    chunked: set[str] = set()
    for c in run.get("chunks", []):
        if c["started_at"] is None or c["finished_at"] is None:
            continue
        if drawn >= MAX_BARS:
            left_out += 1
            continue
        key = c["task_key"]
        if key not in chunked:  # a map's row: its chunks instead of its one long attempt
            chunked.add(key)
            bars[key] = [b for b in bars.get(key, []) if b[2] != "attempt"]
        counts = c["counts"] or {}
        failed = sum(n for s, n in counts.items() if s in FAILED)
        total = sum(counts.values()) or c.get("items") or 0
        state = "FAILED" if failed and failed >= total else "SUCCESS"  # a chunk with some failed items: a red band
        label = f"items {c['start']}-{c['stop']}: " + (f"{failed} of {total} failed" if failed else "all ok")
        label += " (retried)" if c.get("retried") else ""
        bars[key].append((c["started_at"], c["finished_at"], "chunk", state, label, failed / total if total else 0.0))
        drawn += 1
    return bars, left_out


class Axis:
    """Seconds to x, with long idle stretches cut to ``BREAK_W`` (see the module's note)."""

    def __init__(self, spans: list[tuple[float, float]], work: list[tuple[float, float]]):
        self.start = min(s for s, _ in spans)
        self.end = max(e for _, e in spans)
        total = max(self.end - self.start, 1e-3)
        self.breaks: list[tuple[float, float]] = []
        reach = self.start
        for s, e in sorted(work):
            if s - reach > max(BREAK_SHARE * total, 1.0):
                self.breaks.append((reach, s))
            reach = max(reach, e)
        if self.end - reach > max(BREAK_SHARE * total, 1.0) and reach > self.start:
            self.breaks.append((reach, self.end))
        kept = total - sum(e - s for s, e in self.breaks)
        self.scale = (CHART_W - BREAK_W * len(self.breaks)) / max(kept, 1e-3)

    def x(self, t: float) -> float:
        out = LABEL_W + (t - self.start) * self.scale
        for s, e in self.breaks:
            if t <= s:
                break
            out -= (min(t, e) - s) * self.scale
            if t >= e:
                out += BREAK_W
            else:
                out += BREAK_W * (t - s) / (e - s)
        return out

    def ticks(self) -> list[float]:
        """Round times (1, 2 or 5 times a power of ten seconds) outside the breaks."""
        kept = (CHART_W - BREAK_W * len(self.breaks)) / self.scale
        raw = kept / 8
        step = min((m * 10 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)), key=lambda v: abs(v - raw)) if raw > 0 else 1
        out, k = [], 0
        while self.start + k * step <= self.end + 1e-9 and k < 200:
            t = self.start + k * step
            if not any(s < t < e for s, e in self.breaks):
                out.append(t)
            k += 1
        return out


def _seconds(value: float) -> str:
    if value < 60:
        return f"{value:g}s" if value >= 1 or value == 0 else f"{value * 1000:.3g}ms"  # 0.25ms, 1.5ms, 250ms
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes // 60}h {minutes % 60}m" if minutes >= 60 else f"{minutes}m {seconds}s" if seconds else f"{minutes}m"


def timeline_svg(run: Mapping[str, Any], tasks: list[dict], now: float | None = None) -> str:
    """The Gantt chart of a run (``""`` when nothing has started yet)."""
    recorded = [t for t in (*(x["started_at"] for x in run.get("transitions", [])), run.get("finished_at")) if t]
    bars, left_out = bars_of(run, tasks, now if now is not None else max(recorded, default=0.0))
    spans = [(b[0], b[1]) for rows in bars.values() for b in rows]
    if not spans:
        return ""
    axis = Axis(spans, [(b[0], b[1]) for rows in bars.values() for b in rows if b[2] != "wait"])
    rows = []
    top = MARGIN + AXIS_H
    for key, row in bars.items():
        lanes = _lanes(row)
        height = ROW_H if not any(b[2] == "chunk" for b in row) else max(ROW_H, 6 + LANE_H * (1 + max(lanes, default=0)))
        rows.append((key, row, lanes, top, height))
        top += height
    height, width = top + MARGIN + (16 if left_out else 0), LABEL_W + CHART_W + MARGIN * 2
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" fill="currentColor">',
        '<defs><pattern id="waiting" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="2" height="6" fill="currentColor" fill-opacity="0.45"/></pattern></defs>',
    ]
    for t in axis.ticks():
        x = axis.x(t)
        out.append(
            f'<line x1="{x:.1f}" y1="{MARGIN + AXIS_H - 6}" x2="{x:.1f}" y2="{top}" stroke="currentColor" stroke-opacity="0.15"/>'
            f'<text x="{x:.1f}" y="{MARGIN + 10}" text-anchor="middle" fill-opacity="0.7">{_seconds(round(t - axis.start, 6))}</text>'
        )
    for s, e in axis.breaks:
        x = axis.x(s)
        out.append(
            f'<g class="break"><rect x="{x + 4:.1f}" y="{MARGIN + AXIS_H - 6}" width="{BREAK_W - 8}" height="{top - MARGIN - AXIS_H + 6}" '
            f'fill="currentColor" fill-opacity="0.06"/><text x="{x + BREAK_W / 2:.1f}" y="{MARGIN + 10}" text-anchor="middle" '
            f'fill-opacity="0.7">+{_seconds(e - s)}</text><title>{_seconds(e - s)} in which nothing ran, cut short</title></g>'
        )
    for key, row, lanes, y, h in rows:
        out.append(f'<text x="4" y="{y + 15}"><title>{escape(key)}</title>{escape(_short(key, 34))}</text>')
        for (s, e, kind, state, label, *share), lane in zip(row, lanes):
            x0, x1 = axis.x(s), axis.x(e)
            tip = f"<title>{escape(key)} · {escape(label)} · {took(s, e)}</title>"
            if kind == "wait":
                out.append(
                    f'<rect class="wait" data-key="{escape(key)}" x="{x0:.1f}" y="{y + 7}" width="{max(x1 - x0, 1):.1f}" '
                    f'height="{ROW_H - 14}" fill="url(#waiting)">{tip}</rect>'
                )
                continue
            bar_y, bar_h = (y + 3, ROW_H - 6) if kind == "attempt" else (y + 3 + lane * LANE_H, LANE_H - 1)
            out.append(
                f'<rect class="bar {kind}" data-key="{escape(key)}" data-state="{escape(state)}" x="{x0:.1f}" y="{bar_y}" '
                f'width="{max(x1 - x0, 1.5):.1f}" height="{bar_h}" fill="{colour(state, "#ccc")}" stroke="currentColor" '
                f'stroke-opacity="0.35" stroke-width="0.5">{tip}</rect>'
            )
            if share and 0 < share[0] < 1:  # the failed share of a chunk, at least a visible line
                band = max(bar_h * share[0], 1.5)
                out.append(
                    f'<rect class="failed-share" x="{x0:.1f}" y="{bar_y + bar_h - band:.1f}" width="{max(x1 - x0, 1.5):.1f}" '
                    f'height="{band:.1f}" fill="{colour("FAILED")}">{tip}</rect>'
                )
    if left_out:
        out.append(f'<text x="{LABEL_W}" y="{height - MARGIN + 4}" fill-opacity="0.7">{left_out} more chunks not drawn</text>')
    out.append("</svg>")
    return "".join(out)


def _lanes(row: list[tuple]) -> list[int]:
    """A lane per bar of a row: chunks that overlap in time go to different lanes (up to
    ``LANES``, then they share); attempts and waits stay in lane 0."""
    ends = [float("-inf")] * LANES
    out = [0] * len(row)
    for i in sorted(range(len(row)), key=lambda i: row[i][0]):
        if row[i][2] != "chunk":
            continue
        lane = next((n for n in range(LANES) if ends[n] <= row[i][0]), min(range(LANES), key=lambda n: ends[n]))
        ends[lane] = max(ends[lane], row[i][1])
        out[i] = lane
    return out


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
