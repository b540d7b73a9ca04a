"""``rayflow graph``: a flow's graph as Mermaid or Graphviz dot, coloured by state for a run.

Both formats draw a *shape* (``core.graph.shape_of``: plain data, the same
for a freshly traced flow and for the graph a run stored in the history).
A subflow is a group (a Mermaid subgraph, a dot cluster) holding its tasks
and its result node; the order-only edges from its tasks to its result node
are left out, as they only say "the subflow waits for its tasks".
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rayflow.presentation import colour



def _idents(shape: dict[str, Any]) -> dict[str, str]:
    """A readable id per key (``a/b-2`` -> ``n_a_b_2``), made unique where two keys read alike."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for i, node in enumerate(shape["nodes"]):
        ident = "n_" + "".join(c if c.isalnum() else "_" for c in node["key"])
        if ident in used:
            ident = f"{ident}__{i}"
        used.add(ident)
        out[node["key"]] = ident
    return out


def _quoted(text: str, fmt: str) -> str:
    return text.replace('"', "#quot;") if fmt == "mermaid" else text.replace("\\", "\\\\").replace('"', '\\"')


def _group(key: str) -> str:
    return key.rpartition("/")[0]


def edges(shape: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(upstream, downstream, kind): kind is data, fused (a map running in its upstream map's
    chunks, core.fusion), wait (order only) or case."""
    fused = {(a, b) for chain in shape.get("fused") or () for a, b in zip(chain, chain[1:])}
    out = []
    for node in shape["nodes"]:
        key = node["key"]
        for dep in node["upstream"]:
            out.append((dep, key, "fused" if (dep, key) in fused else "data"))
        for dep in node["wait_for"]:
            if dep not in node["upstream"] and not (node["kind"] == "subflow" and dep.startswith(key + "/")):
                out.append((dep, key, "wait"))
        for dep in node["conditions"]:
            if dep not in node["upstream"] and dep not in node["wait_for"]:
                out.append((dep, key, "case"))
    return out


def _label(node: dict[str, Any], states: dict[str, str]) -> str:
    key = node["key"]
    suffix = {"map": " [map]", "subflow": " [subflow result]"}.get(node["kind"], "")
    label = key.rsplit("/", 1)[-1] + suffix
    return f"{label}: {states[key]}" if key in states else label


def _layout(shape: dict[str, Any]) -> tuple[dict[str, list[dict]], list[str]]:
    """Nodes by group ("" is the top level), and the subflow groups in nesting order."""
    by_group: dict[str, list[dict]] = defaultdict(list)
    for node in shape["nodes"]:
        group = node["key"] if node["kind"] == "subflow" else _group(node["key"])
        by_group[group].append(node)
    groups = [n["key"] for n in shape["nodes"] if n["kind"] == "subflow"]
    return by_group, groups


def mermaid(shape: dict[str, Any], states: dict[str, str]) -> str:
    by_group, groups = _layout(shape)
    ids = _idents(shape)
    lines = ["flowchart TD"]

    def emit(group: str, indent: str) -> None:
        for node in by_group.get(group, []):
            shape_open, shape_close = ('[["', '"]]') if node["kind"] == "map" else (('(["', '"])') if node["kind"] == "subflow" else ('["', '"]'))
            lines.append(f"{indent}{ids[node['key']]}{shape_open}{_quoted(_label(node, states), 'mermaid')}{shape_close}")
        for child in (g for g in groups if _group(g) == group):
            title = f"{child} (subflow)" + (f": {states[child]}" if child in states else "")
            lines.append(f'{indent}subgraph s_{ids[child]}["{_quoted(title, "mermaid")}"]')
            emit(child, indent + "    ")
            lines.append(f"{indent}end")

    emit("", "    ")
    arrows = {"data": "-->", "fused": "==>|fused|", "wait": "-.->", "case": "-.->|case|"}
    for up, down, kind in edges(shape):
        lines.append(f"    {ids[up]} {arrows[kind]} {ids[down]}")
    for node in shape["nodes"]:
        if node["key"] in states:
            lines.append(f"    style {ids[node['key']]} fill:{colour(states[node['key']], '#ffffff')}")
    return "\n".join(lines)


def dot(shape: dict[str, Any], states: dict[str, str]) -> str:
    by_group, groups = _layout(shape)
    ids = _idents(shape)
    lines = [f'digraph "{_quoted(shape["flow"], "dot")}" {{', "    rankdir=TB;", "    node [shape=box, style=filled, fillcolor=white];"]

    def emit(group: str, indent: str) -> None:
        for node in by_group.get(group, []):
            extra = {"map": ", peripheries=2", "subflow": ", shape=oval"}.get(node["kind"], "")
            fill = f', fillcolor="{colour(states[node["key"]], "#ffffff")}"' if node["key"] in states else ""
            lines.append(f'{indent}{ids[node["key"]]} [label="{_quoted(_label(node, states), "dot")}"{extra}{fill}];')
        for child in (g for g in groups if _group(g) == group):
            lines.append(f"{indent}subgraph cluster_{ids[child]} {{")
            lines.append(f'{indent}    label="{_quoted(child, "dot")} (subflow)"; style=rounded;')
            emit(child, indent + "    ")
            lines.append(f"{indent}}}")

    emit("", "    ")
    styles = {"data": "", "fused": ' [style=bold, penwidth=2, label="fused"]', "wait": " [style=dashed]", "case": ' [style=dotted, label="case"]'}
    for up, down, kind in edges(shape):
        lines.append(f"    {ids[up]} -> {ids[down]}{styles[kind]};")
    lines.append("}")
    return "\n".join(lines)
