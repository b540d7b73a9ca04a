"""Which element-wise map chains run fused: one pass per chunk, no object-store trip between.

``g.map(f.map(xs))`` makes g's item i from f's item i.  Fused, a chunk of f runs, and when
its first run leaves every item final (nothing to retry: ``protocol.settles_first_run``) g
runs on its items in the same worker call, then h on g's, down the chain.  Each task keeps
its own states, retries, timeouts, skips, logs, spans and history rows per chunk: the
orchestrator takes each stage's result as if its chunk had been submitted on its own
(``engine.maps.coordinator``).  A chunk that does not settle on its first run (a retry, an
``rf.Retry``, a pause) stops the chain there; the rest of that chunk runs unfused.

A map g is fused behind f only where that cannot change what g computes or what anyone
else sees of f (``refusal`` names the reason otherwise):

- g maps over f element-wise, or over ``rf.flatten(f)``, and over nothing else (no zip),
  and does not take f's whole result too.  Through a flatten, a chunk goes on fused only
  where its items' place in the flattened sequence is known when it starts: every earlier
  chunk of f has ended (the first chunks, and chunks cut after a pause in f's pipeline);
- nothing else consumes f: no other task, no ``wait_for`` (f's values are kept, as
  unfused: the run's result and ``FlowRun.task_result`` read them);
- both are per-item tasks, or both ``batch=True``;
- the same Ray resources and runtime environment; no tags (limits admit each task's
  chunks on their own);
- neither persists its results nor caches per item, and neither loads stored chunks (a
  resumed run).

``@rf.flow(fuse=False)`` turns fusion off for a flow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rayflow.core.pausing import persists
from rayflow.core.refs import NodeRef, find_refs


@dataclass(frozen=True)
class Fusion:
    chains: tuple[tuple[str, ...], ...] = ()  # each fused chain, head first (at least two maps)
    refused: tuple[tuple[str, str, str], ...] = ()  # (f, g, why) for element-wise pairs left unfused

    def next_of(self) -> dict[str, str]:
        """Each fused map's next stage: f -> g."""
        return {a: b for chain in self.chains for a, b in zip(chain, chain[1:])}


def plan_fusion(nodes: Iterable[Any], options: Any = None) -> Fusion:
    """The fused chains of a flow graph's ``nodes`` (graph nodes, in topological order), whose
    flow has ``options`` (FlowOptions; None: the defaults)."""
    nodes = tuple(nodes)
    by_key = {n.key: n for n in nodes}
    consumers: dict[str, list[str]] = {n.key: [] for n in nodes}
    for node in nodes:
        for dep in node.dependencies:
            consumers[dep].append(node.key)
    flow_persist = persists(options, nodes)
    loaded = set(getattr(options, "resume_chunks", None) or ())
    enabled = getattr(options, "fuse", True)
    pairs: dict[str, str] = {}
    refused: list[tuple[str, str, str]] = []
    for g in nodes:
        if g.kind != "map":
            continue
        for source in g.sources:
            if source.kind not in ("map", "flatten_map"):
                continue
            f = by_key[source.key]
            why = "the flow has fuse=False" if not enabled else refusal(f, g, consumers[f.key], flow_persist, loaded)
            if why is None:
                pairs[f.key] = g.key
            else:
                refused.append((f.key, g.key, why))
    return Fusion(_chains(pairs, [n.key for n in nodes]), tuple(refused))


def refusal(f: Any, g: Any, consumers: list[str], flow_persist: bool, loaded: set[str]) -> str | None:
    """Why map ``g`` cannot run fused behind map ``f`` (None: it can)."""
    if len(g.sources) != 1:
        return f"{g.key} maps over more than {f.key}"
    if f.key in g.upstream and any(r._key == f.key for r in find_refs((g.args, dict(g.kwargs))) if isinstance(r, NodeRef)):
        return f"{g.key} also takes {f.key}'s whole result"
    if set(consumers) != {g.key} or f.key in g.wait_for or f.key in g.conditions:
        others = sorted(set(consumers) - {g.key}) or [g.key]
        return f"{f.key}'s result is used by {', '.join(others)} too"
    a, b = f.task.options, g.task.options
    if a.batch != b.batch:
        return "one is batch=True and the other is not"
    if a.ray_options() != b.ray_options():
        return "their resources or runtime environments differ"
    if a.tags or b.tags:
        return "a tagged task's chunks wait for its limits on their own"
    for node in (f, g):
        options = node.task.options
        if options.persist if options.persist is not None else flow_persist:
            return f"{node.key} persists its results"
        if options.cache_key_fn is not None:
            return f"{node.key} caches its items"
        if node.key in loaded:
            return f"{node.key} loads stored chunks (a resumed run)"
    return None


def _chains(pairs: dict[str, str], order: list[str]) -> tuple[tuple[str, ...], ...]:
    heads = set(pairs) - set(pairs.values())
    out = []
    for key in order:
        if key in heads:
            chain = [key]
            while chain[-1] in pairs:
                chain.append(pairs[chain[-1]])
            out.append(tuple(chain))
    return tuple(out)
