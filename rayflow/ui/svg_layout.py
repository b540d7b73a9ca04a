"""A layered (Sugiyama-style) layout of a run's graph: pure functions, no drawing.

1. Layers by longest path: a node sits one layer after its deepest dependency.
2. An edge that spans several layers gets a chain of *dummy* points, one per layer
   it crosses (so it can be ordered, and drawn, like a node: it bends around nodes
   instead of cutting through them).
3. The order within each layer comes from barycenter sweeps: down the layers, each
   node goes to the mean position of its neighbours in the layer before; up again
   with the layer after; a few rounds, keeping the order with the fewest crossings.
4. Positions: a layer is a column (the graph reads left to right), its nodes stacked
   in their order and centred on the tallest column.

Everything is O((nodes + dummies) log n) per sweep; crossings are counted as
inversions per pair of layers (binary insertion), so 2,000 nodes lay out
in well under a second.  Dummies are capped (``MAX_DUMMIES``): past it, the longest
edges are drawn straight instead of routed; and the sweeps are fewer for a larger graph (``WORK``).
"""

from __future__ import annotations

import bisect

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

SWEEPS = 4  # rounds of down+up barycenter sweeps (the best order of them all is kept)
MAX_DUMMIES = 5_000
WORK = 40_000  # points x sweeps: a larger graph gets fewer sweeps (its page stays fast)


@dataclass
class Layout:
    """Where each node goes: ``layer`` (its column) and ``order`` (its place in the column);
    ``layers`` lists each column's members in order (real keys and dummy ids);
    ``routes`` maps each edge (dep, key) to the dummy ids it passes through, in order."""

    layer: dict[str, int]
    layers: list[list[str]]
    routes: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)  # the groups of each point, dummies too

    @property
    def order(self) -> dict[str, int]:
        return {k: i for row in self.layers for i, k in enumerate(row)}


def longest_path_layers(keys: Sequence[str], deps: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each node's layer: one after its deepest dependency (0 for a root); ``keys`` in any
    order (a cycle, which a plan never has, is broken where it is met)."""
    layer: dict[str, int] = {}
    visiting: set[str] = set()
    for start in keys:
        if start in layer:
            continue
        stack = [start]
        while stack:  # iterative depth-first: a 2,000-long chain must not hit the recursion limit
            key = stack[-1]
            pending = [d for d in deps.get(key, ()) if d not in layer and d not in visiting]
            if pending and key not in visiting:
                visiting.add(key)
                stack.extend(pending)
                continue
            stack.pop()
            visiting.discard(key)
            if key not in layer:
                layer[key] = 1 + max((layer[d] for d in deps.get(key, ()) if d in layer), default=-1)
    return layer


def layered(
    keys: Sequence[str], deps: Mapping[str, Sequence[str]], groups: Mapping[str, Sequence[str]] | None = None,
    sweeps: int = SWEEPS,
) -> Layout:
    """The layout of ``keys`` whose edges run from each of ``deps[key]`` to ``key``.
    ``groups``: the groups (subflows) a key is in, outermost first; a group's members stay
    together in each layer, placed by the group's mean position (so a box can hold them)."""
    groups = dict(groups or {})
    layer = longest_path_layers(keys, deps)
    depth = 1 + max(layer.values(), default=-1)
    layers: list[list[str]] = [[] for _ in range(depth)]
    for key in keys:
        layers[layer[key]].append(key)
    routes: dict[tuple[str, str], list[str]] = {}
    down: dict[str, list[str]] = {k: [] for k in keys}  # a point's neighbours in the layer before
    up: dict[str, list[str]] = {k: [] for k in keys}  # ... and in the layer after
    dummies = 0
    edges = sorted(((d, k) for k in keys for d in deps.get(k, ()) if d in layer), key=lambda e: layer[e[1]] - layer[e[0]])
    for dep, key in edges:  # short edges first: they get the dummies when the cap bites
        span = layer[key] - layer[dep]
        chain: list[str] = []
        if 1 < span and dummies + span - 1 <= MAX_DUMMIES:
            for step in range(1, span):
                dummy = f"\0{dep}\0{key}\0{step}"
                layers[layer[dep] + step].append(dummy)
                layer[dummy] = layer[dep] + step
                down[dummy], up[dummy] = [], []
                shared = [g for g, h in zip(groups.get(dep, ()), groups.get(key, ())) if g == h]
                if shared:  # an edge inside a group runs inside its box
                    groups[dummy] = shared
                chain.append(dummy)
            dummies += span - 1
        points = [dep, *chain, key]
        for a, b in zip(points, points[1:]):
            up[a].append(b)
            down[b].append(a)
        routes[(dep, key)] = chain
    best = [row[:] for row in layers]
    best_crossings = crossings(best, up)
    for _ in range(max(1, min(sweeps, WORK // max(len(layer), 1)))):
        if best_crossings == 0:
            break
        for i in range(1, depth):
            _by_barycenter(layers[i], layers[i - 1], down, groups)
        for i in range(depth - 2, -1, -1):
            _by_barycenter(layers[i], layers[i + 1], up, groups)
        count = crossings(layers, up)
        if count < best_crossings:
            best, best_crossings = [row[:] for row in layers], count
    return Layout(layer=layer, layers=best, routes=routes, groups={k: list(v) for k, v in groups.items()})


def _by_barycenter(
    row: list[str], fixed: list[str], neighbours: Mapping[str, Sequence[str]], groups: Mapping[str, Sequence[str]],
) -> None:
    """Sort ``row`` in place by its points' mean place among their neighbours in ``fixed``
    (a point without any keeps its place: stable); a group's members by the group's mean
    first, so they stay together (nested groups likewise, outermost first)."""
    place = {k: i for i, k in enumerate(fixed)}
    scaled = len(fixed) / max(len(row), 1)
    centre: dict[str, float] = {}
    for i, key in enumerate(row):
        near = [place[n] for n in neighbours[key] if n in place]
        centre[key] = sum(near) / len(near) if near else i * scaled
    sums: dict[str, list[float]] = {}
    for key in row:
        for g in groups.get(key, ()):
            sums.setdefault(g, []).append(centre[key])
    mean = {g: sum(v) / len(v) for g, v in sums.items()}

    def rank(key: str) -> tuple:
        return (*((mean[g], g) for g in groups.get(key, ())), (centre[key], ""))

    row.sort(key=rank)


def crossings(layers: Sequence[Sequence[str]], up: Mapping[str, Sequence[str]]) -> int:
    """How many pairs of edges cross between adjacent layers, the layers in this order:
    edges sorted by their upper end, then the inversions among their lower ends."""
    total = 0
    for upper, lower in zip(layers, layers[1:]):
        place = {k: i for i, k in enumerate(lower)}
        ends = [b for a in upper for b in sorted(place[n] for n in up.get(a, ()) if n in place)]
        total += _inversions(ends)
    return total


def _inversions(values: list[int]) -> int:
    """Pairs i < j with values[i] > values[j]: each value against the sorted ones before it
    (``insort`` moves memory in C: fast at the few thousand edges between two layers)."""
    seen: list[int] = []
    count = 0
    for i, v in enumerate(values):
        count += i - bisect.bisect_right(seen, v)
        bisect.insort(seen, v)
    return count


def drawn_crossings(paths: Sequence[tuple[tuple[str, str], Sequence[tuple[float, float]]]]) -> int:
    """Crossings of edges as drawn: each path is an edge's (ends, points), its points
    (layer, y) in layer order, straight between them.  Two segments of edges that share no
    end cross when they swap sides over the layers where both run (linear interpolation).
    O(segments^2): for tests and measurements, comparing layouts that route edges differently."""
    segs = [(set(ends), pts[i], pts[i + 1]) for ends, pts in paths for i in range(len(pts) - 1)]
    total = 0
    for i, (ends_a, (a0, ay), (a1, by)) in enumerate(segs):
        for ends_c, (c0, cy), (c1, dy) in segs[i + 1:]:
            lo, hi = max(a0, c0), min(a1, c1)
            if lo >= hi or ends_a & ends_c:
                continue
            start = _at(a0, ay, a1, by, lo) - _at(c0, cy, c1, dy, lo)
            end = _at(a0, ay, a1, by, hi) - _at(c0, cy, c1, dy, hi)
            total += start * end < 0
    return total


def _at(x0: float, y0: float, x1: float, y1: float, x: float) -> float:
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
