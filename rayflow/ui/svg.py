"""A run's graph as SVG, laid out here (``svg_layout``: layered, fewer crossings; no layout library).

The graph reads left to right: a column per layer, a task one column after its deepest
dependency; an edge that spans columns is routed through points of its own between the
nodes.  Each node is filled with its state's colour (``presentation.colour``) and links to
its page: a task to ``/runs/{id}/tasks/{key}``, a map (one node, with its item counts) to
``/runs/{id}/maps/{key}``.  A subflow is a dashed box around its tasks whose title
collapses it into one node (``?collapse=KEY``, server-side: the layout is redone without
its tasks) and, collapsed, expands it again.  Text and lines use ``currentColor`` so the
drawing follows the page's light or dark colours; ``static/graph.js`` adds zoom and pan.

The timeline (a Gantt chart) is in ``svg_timeline``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from rayflow.presentation import colour
from rayflow.ui.svg_layout import layered
from rayflow.ui.svg_timeline import timeline_svg

__all__ = ["graph_svg", "subflows_of", "timeline_svg"]

NODE_W, NODE_H, GAP_X, GAP_Y, DUMMY_H, MARGIN, TOP, GROUP_GAP = 180, 46, 64, 14, 8, 16, 30, 20
INK = "#222"  # text on a node's (light) state fill, in light and dark mode alike


def subflows_of(shape: Mapping[str, Any]) -> list[str]:
    """The keys of a graph's subflow nodes."""
    return [n["key"] for n in shape.get("nodes", []) if n["kind"] == "subflow"]


def _owner(key: str, collapsed: Collection[str]) -> str:
    """The node that stands for ``key``: the outermost collapsed subflow holding it, or itself."""
    if not collapsed or "/" not in key:
        return key
    parts = key.split("/")
    for i in range(1, len(parts)):
        prefix = "/".join(parts[:i])
        if prefix in collapsed:
            return prefix
    return key


def graph_svg(shape: Mapping[str, Any], tasks: list[dict], run_id: str = "", collapsed: Collection[str] = ()) -> str:
    nodes = [n for n in shape.get("nodes", []) if _owner(n["key"], collapsed) == n["key"]]
    if not nodes:
        return ""
    by_key = {t["task"]: t for t in tasks}
    keys = [n["key"] for n in nodes]
    present = set(keys)
    deps: dict[str, list[str]] = {k: [] for k in keys}
    for n in shape["nodes"]:
        key = _owner(n["key"], collapsed)
        for d in (*n["upstream"], *n["wait_for"], *n["conditions"]):
            dep = _owner(d, collapsed)
            if dep in present and dep != key and dep not in deps[key]:
                deps[key].append(dep)
    subflows = {k for k in subflows_of(shape) if k in present and k not in collapsed}
    groups = {k: [g for g in _prefixes(k) if g in subflows] for k in keys}
    layout = layered(keys, deps, groups)
    x: dict[str, float] = {}
    y: dict[str, float] = {}
    heights = []
    for column, row in enumerate(layout.layers):  # stacked from 0; a group's first member leaves room for its title
        top, before = 0.0, []
        for k in row:
            now = layout.groups.get(k, [])
            top += GROUP_GAP * sum(1 for g in now if g not in before) + GROUP_GAP / 2 * sum(1 for g in before if g not in now)
            x[k], y[k] = MARGIN + column * (NODE_W + GAP_X), top
            top += (DUMMY_H if k.startswith("\0") else NODE_H) + GAP_Y
            before = now
        heights.append(top + GROUP_GAP / 2 * len(before))
    tallest = max(heights)
    for row, h in zip(layout.layers, heights):  # each column centred on the tallest
        for k in row:
            y[k] += TOP + (tallest - h) / 2
    width = int(MARGIN * 2 + len(layout.layers) * (NODE_W + GAP_X) - GAP_X)
    height = int(TOP + tallest + MARGIN)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" data-nodes="{len(keys)}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="currentColor" fill-opacity="0.6"/></marker>'
        '<marker id="arrow-fused" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="10" markerHeight="10" markerUnits="userSpaceOnUse" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="currentColor" fill-opacity="0.8"/></marker></defs><g class="viewport">',
    ]
    for sub in sorted(subflows, key=lambda k: k.count("/")):  # boxes around each column's part of a subflow, underneath
        out.append(_subflow_boxes(sub, layout.layers, groups, x, y, collapsed))
    fused = {(a, b) for chain in shape.get("fused") or () for a, b in zip(chain, chain[1:])}
    for (dep, key), chain in layout.routes.items():
        points = [(x[dep] + NODE_W, y[dep] + NODE_H / 2)]
        for d in chain:
            points += [(x[d], y[d] + DUMMY_H / 2), (x[d] + NODE_W, y[d] + DUMMY_H / 2)]
        points.append((x[key], y[key] + NODE_H / 2))
        path = [f"M{points[0][0]:.0f},{points[0][1]:.1f}"]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            if x1 - x0 == NODE_W and y0 == y1:  # through a column: straight
                path.append(f"L{x1:.0f},{y1:.1f}")
            else:
                mid = (x0 + x1) / 2
                path.append(f"C{mid:.0f},{y0:.1f} {mid:.0f},{y1:.1f} {x1:.0f},{y1:.1f}")
        if (dep, key) in fused:  # a map running in its upstream map's chunks, one pass per chunk (core.fusion)
            out.append(
                f'<path class="edge fused" d="{" ".join(path)}" fill="none" stroke="currentColor" stroke-opacity="0.8" '
                f'stroke-width="3" marker-end="url(#arrow-fused)"><title>{escape(key)} runs fused with {escape(dep)}: '
                'one pass per chunk, in the same worker call</title></path>'
            )
            continue
        out.append(
            f'<path class="edge" d="{" ".join(path)}" fill="none" stroke="currentColor" stroke-opacity="0.45" '
            'marker-end="url(#arrow)"/>'
        )
    for node in nodes:
        out.append(_node(node, by_key.get(node["key"], {}), x[node["key"]], y[node["key"]], run_id, collapsed))
    out.append("</g></svg>")
    return "".join(out)


def _collapse_href(keys: Collection[str]) -> str:
    return "?" + urlencode([("collapse", k) for k in sorted(keys)]) + "#graph" if keys else "?#graph"


def _prefixes(key: str) -> list[str]:
    """``a/b/c`` -> ``a``, ``a/b``, ``a/b/c``: the subflows a key may be in (or be), outermost first."""
    parts = key.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _subflow_boxes(
    sub: str, layers: list[list[str]], groups: Mapping[str, list[str]], x: Mapping[str, float], y: Mapping[str, float],
    collapsed: Collection[str],
) -> str:
    """A dashed box around the subflow's members in each column (they sit together: the layout
    keeps a group contiguous), the first titled with a link that collapses it."""
    pad = max(3, 10 - 3 * sub.count("/"))
    out = [f'<g class="subflow" data-key="{escape(sub)}">']
    titled = False
    for row in layers:
        members = [k for k in row if not k.startswith("\0") and sub in groups.get(k, ())]
        if not members:
            continue
        x0, y0 = x[members[0]] - pad, y[members[0]] - pad - (12 if not titled else 0)
        y1 = y[members[-1]] + NODE_H + pad
        out.append(
            f'<rect x="{x0}" y="{y0:.1f}" width="{NODE_W + 2 * pad}" height="{y1 - y0:.1f}" rx="8" fill="currentColor" '
            'fill-opacity="0.05" stroke="currentColor" stroke-opacity="0.5" stroke-dasharray="5,4"/>'
        )
        if not titled:
            href = _collapse_href({*collapsed, sub})
            out.append(
                f'<a href="{escape(href)}" class="toggle"><title>collapse subflow {escape(sub)} into one node</title>'
                f'<text x="{x0 + 6}" y="{y0 + 11:.1f}" fill="currentColor" font-size="11">▾ {escape(_short(sub, 26))}</text></a>'
            )
            titled = True
    out.append("</g>")
    return "".join(out)


def _node(node: Mapping[str, Any], row: Mapping[str, Any], x: float, y: float, run_id: str, collapsed: Collection[str]) -> str:
    key, kind = node["key"], node["kind"]
    state = row.get("state", "PENDING")
    detail = state
    items = row.get("items")
    if items:
        detail = f"{state} · {_count(items['done'])}/{_count(items['total'])}" + (f" · {_count(items['failed'])} failed" if items["failed"] else "")
        if items.get("skipped"):
            detail += f" · {_count(items['skipped'])} skipped"
        if items.get("cached"):
            detail += f" · {_count(items['cached'])} cached"
    label = key.rpartition("/")[2]  # unique among its subflow's (a name may be many tasks')
    page = "maps" if kind == "map" else "tasks"
    href = f"/runs/{quote(run_id, safe='')}/{page}/{quote(key, safe='/')}"
    expand = ""
    if key in collapsed:
        label = f"▸ {label}"
        expand = (
            f'<a href="{escape(_collapse_href(set(collapsed) - {key}))}" class="toggle"><title>expand subflow {escape(key)}</title>'
            f'<text x="{x + NODE_W - 8}" y="{y - 4}" text-anchor="end" fill="currentColor">expand ▸</text></a>'
        )
    dashed = ' stroke-dasharray="5,3"' if key in collapsed else ""
    return (
        f'<g class="node" data-key="{escape(key)}" data-state="{escape(state)}" data-kind="{escape(kind)}">'
        f'<a href="{escape(href)}"><title>{escape(key)}: {escape(detail)}</title>'
        f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6" fill="{colour(state, "#ffffff")}" '
        f'stroke="{INK}" stroke-opacity="0.6"{dashed}/>'
        f'<text x="{x + 8}" y="{y + 18}" font-weight="bold" fill="{INK}">{escape(_short(label, 24))}</text>'
        f'<text x="{x + 8}" y="{y + 35}" fill="{INK}">{escape(_short(detail, 28))}</text></a>{expand}</g>'
    )


def _count(n: int) -> str:
    """A count in a node's few characters: 950, 12.5k, 1M."""
    for size, unit in ((1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
