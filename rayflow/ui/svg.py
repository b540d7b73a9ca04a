"""A run's graph and timeline as SVG, laid out here (no JavaScript, no layout library).

The graph is layered: a task sits one row below its lowest dependency, rows
are ordered by their parents' mean position (one pass, enough to keep
chains straight), a map is one node with its item counts, and a subflow is
a dashed box around its tasks.  The timeline has one row per task: each
attempt is a bar of its own (a retry is a second bar on the same row, never
a longer one), and a map's row holds its chunks' bars (per-chunk records:
a 10^6-item map costs what its chunks do).
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from rayflow.presentation import ACTIVE, FAILED, colour

NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 176, 46, 24, 40, 20
ROW_H, LABEL_W, TIMELINE_W = 22, 220, 900
MAX_BARS = 5000  # chunk bars drawn per timeline (the rest are counted)


def graph_svg(shape: Mapping[str, Any], tasks: list[dict]) -> str:
    nodes = [n for n in shape.get("nodes", [])]
    if not nodes:
        return ""
    by_key = {t["task"]: t for t in tasks}
    keys = [n["key"] for n in nodes]
    present = set(keys)
    deps = {n["key"]: [d for d in (*n["upstream"], *n["wait_for"], *n["conditions"]) if d in present] for n in nodes}
    layer: dict[str, int] = {}
    for key in keys:  # nodes come in a valid order (the plan's): parents first
        layer[key] = 1 + max((layer.get(d, 0) for d in deps[key]), default=-1)
    rows: dict[int, list[str]] = {}
    for key in keys:
        rows.setdefault(layer[key], []).append(key)
    x: dict[str, float] = {}
    for depth in sorted(rows):
        row = rows[depth]
        if depth:
            row.sort(key=lambda k: (sum(x[d] for d in deps[k]) / len(deps[k])) if deps[k] else 0.0)
        for i, key in enumerate(row):
            x[key] = MARGIN + i * (NODE_W + GAP_X)
    y = {k: MARGIN + 18 + layer[k] * (NODE_H + GAP_Y) for k in keys}
    width = MARGIN * 2 + max(len(r) for r in rows.values()) * (NODE_W + GAP_X)
    height = MARGIN * 2 + 18 + len(rows) * (NODE_H + GAP_Y)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>',
    ]
    for node in nodes:  # subflows: a dashed box around their tasks, drawn first (underneath)
        if node["kind"] != "subflow":
            continue
        members = [k for k in keys if k == node["key"] or k.startswith(node["key"] + "/")]
        x0, y0 = min(x[k] for k in members) - 8, min(y[k] for k in members) - 22
        x1, y1 = max(x[k] for k in members) + NODE_W + 8, max(y[k] for k in members) + NODE_H + 8
        out.append(
            f'<g class="subflow" data-key="{escape(node["key"])}"><rect x="{x0}" y="{y0}" width="{x1 - x0}" '
            f'height="{y1 - y0}" rx="8" fill="none" stroke="#999" stroke-dasharray="5,4"/>'
            f'<text x="{x0 + 8}" y="{y0 + 14}" fill="#666">subflow {escape(node["key"])}</text></g>'
        )
    for key in keys:
        for dep in deps[key]:
            out.append(
                f'<line x1="{x[dep] + NODE_W / 2}" y1="{y[dep] + NODE_H}" x2="{x[key] + NODE_W / 2}" y2="{y[key]}" '
                'stroke="#999" marker-end="url(#arrow)"/>'
            )
    for node in nodes:
        key = node["key"]
        row = by_key.get(key, {})
        state = row.get("state", "PENDING")
        detail = state
        items = row.get("items")
        if items:
            detail = f"{state} · {items['done']}/{items['total']}" + (f" · {items['failed']} failed" if items["failed"] else "")
            if items.get("skipped"):
                detail += f" · {items['skipped']} skipped"
            if items.get("cached"):
                detail += f" · {items['cached']} cached"
        label = node.get("name") or key
        out.append(
            f'<g class="node" data-key="{escape(key)}" data-state="{escape(state)}" data-kind="{escape(node["kind"])}">'
            f'<title>{escape(key)}: {escape(detail)}</title>'
            f'<rect x="{x[key]}" y="{y[key]}" width="{NODE_W}" height="{NODE_H}" rx="6" '
            f'fill="{colour(state, "#ffffff")}" stroke="#555"/>'
            f'<text x="{x[key] + 8}" y="{y[key] + 18}" font-weight="bold">{escape(_short(label, 24))}</text>'
            f'<text x="{x[key] + 8}" y="{y[key] + 35}">{escape(_short(detail, 28))}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def timeline_svg(run: Mapping[str, Any], tasks: list[dict]) -> str:
    """One row per task: its attempts as bars (from RUNNING to where they ended), or a map's chunks."""
    attempts: dict[str, list[tuple[float, float, str]]] = {}
    for t in run.get("transitions", []):
        if t["state"] in ACTIVE - {"RETRYING"} or t["started_at"] is None:
            continue
        end = t["finished_at"] if t["finished_at"] is not None else t["at"]
        attempts.setdefault(t["task_key"], []).append((t["started_at"], end, t["state"]))
    chunks: dict[str, list[tuple[float, float, str]]] = {}
    drawn = 0
    for c in run.get("chunks", []):
        if c["started_at"] is None or c["finished_at"] is None or drawn >= MAX_BARS:
            continue
        failed = any(s in FAILED and n for s, n in (c["counts"] or {}).items())
        chunks.setdefault(c["task_key"], []).append((c["started_at"], c["finished_at"], "FAILED" if failed else "SUCCESS"))
        drawn += 1
    bars = {k: chunks.get(k) or attempts.get(k) or [] for k in [t["task"] for t in tasks]}
    spans = [b for rows in bars.values() for b in rows]
    if not spans:
        return ""
    start = min(s for s, _, _ in spans)
    end = max(e for _, e, _ in spans)
    scale = TIMELINE_W / max(end - start, 1e-3)
    height = MARGIN * 2 + 16 + len(bars) * ROW_H
    width = LABEL_W + TIMELINE_W + MARGIN * 2
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<text x="{LABEL_W}" y="{MARGIN}" fill="#666">0 s</text>'
        f'<text x="{LABEL_W + TIMELINE_W - 60}" y="{MARGIN}" fill="#666">{end - start:.3f} s</text>',
    ]
    for i, (key, rows) in enumerate(bars.items()):
        top = MARGIN + 16 + i * ROW_H
        out.append(f'<text x="4" y="{top + 14}">{escape(_short(key, 32))}</text>')
        for s, e, state in rows:
            left = LABEL_W + (s - start) * scale
            out.append(
                f'<rect class="bar" data-key="{escape(key)}" data-state="{escape(state)}" x="{left:.1f}" y="{top + 3}" '
                f'width="{max((e - s) * scale, 1.5):.1f}" height="{ROW_H - 6}" fill="{colour(state, "#ccc")}" '
                f'stroke="#666" stroke-width="0.5"><title>{escape(key)} {escape(state)} {e - s:.3f}s</title></rect>'
            )
    out.append("</svg>")
    return "".join(out)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
