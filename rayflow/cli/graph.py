"""``rayflow graph``: a flow's graph as Mermaid or Graphviz dot, coloured by state for a run."""

from __future__ import annotations

from typing import Any

COLOURS = {
    "SUCCESS": "#9be39b", "MAPPED": "#9be39b", "CACHED": "#9be39b", "SKIPPED": "#cfd8dc",
    "FAILED": "#f28b82", "TIMED_OUT": "#f28b82", "TRIGGER_FAILED": "#fbbc04", "CANCELLED": "#bdbdbd",
    "RUNNING": "#aecbfa", "RETRYING": "#fdd663", "PENDING": "#ffffff",
}


def _ident(key: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in key)


def edges(graph: Any) -> list[tuple[str, str, str]]:
    """(upstream, downstream, kind): kind is data, wait (order only) or case."""
    out = []
    for node in graph.nodes:
        for dep in node.upstream:
            out.append((dep, node.key, "data"))
        for dep in node.wait_for:
            if dep not in node.upstream:
                out.append((dep, node.key, "wait"))
        for dep in node.conditions:
            if dep not in node.upstream and dep not in node.wait_for:
                out.append((dep, node.key, "case"))
    return out


def _label(node: Any, states: dict[str, str]) -> str:
    label = node.key + (" [map]" if node.kind == "map" else "")
    return f"{label}: {states[node.key]}" if node.key in states else label


def mermaid(graph: Any, states: dict[str, str]) -> str:
    lines = ["flowchart TD"]
    for node in graph.nodes:
        shape = ('[["', '"]]') if node.kind == "map" else ('["', '"]')
        lines.append(f"    {_ident(node.key)}{shape[0]}{_label(node, states)}{shape[1]}")
    arrows = {"data": "-->", "wait": "-.->", "case": "-.->|case|"}
    for up, down, kind in edges(graph):
        lines.append(f"    {_ident(up)} {arrows[kind]} {_ident(down)}")
    for node in graph.nodes:
        if node.key in states:
            lines.append(f"    style {_ident(node.key)} fill:{COLOURS.get(states[node.key], '#ffffff')}")
    return "\n".join(lines)


def dot(graph: Any, states: dict[str, str]) -> str:
    lines = [f'digraph "{graph.flow_name}" {{', "    rankdir=TB;", "    node [shape=box, style=filled, fillcolor=white];"]
    for node in graph.nodes:
        extra = ", peripheries=2" if node.kind == "map" else ""
        fill = f', fillcolor="{COLOURS.get(states[node.key], "#ffffff")}"' if node.key in states else ""
        lines.append(f'    {_ident(node.key)} [label="{_label(node, states)}"{extra}{fill}];')
    styles = {"data": "", "wait": " [style=dashed]", "case": ' [style=dotted, label="case"]'}
    for up, down, kind in edges(graph):
        lines.append(f"    {_ident(up)} -> {_ident(down)}{styles[kind]};")
    lines.append("}")
    return "\n".join(lines)
