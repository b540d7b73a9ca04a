"""What a plan's tasks do with the result store: each plain task's ResultPolicy, each map's
store and per-item cache, the lineage keys caching needs and the persisting tasks' code
fingerprints (compile_plan asks one ResultPlanner per plan)."""

from __future__ import annotations

import inspect
import uuid
from typing import Any

from rayflow.cache import code_fingerprint, lineage_key, snapshot
from rayflow.core.graph import Graph
from rayflow.core.pausing import persists
from rayflow.core.refs import NodeRef, find_refs, substitute
from rayflow.engine.protocol import ItemCachePolicy, ResultPolicy
from rayflow.results import ResultStore, default_location
from rayflow.results_layout import segment_folder


class ResultPlanner:
    """Each plain task's ResultPolicy (None when it neither persists nor caches) and the
    lineage keys they need, computed once per plan and only when some task caches."""

    def __init__(self, graph: Graph, order: list[str], flow: Any):
        self.flow_name = graph.flow_name
        options = flow.options if flow is not None else None
        self.flow_persist = persists(options, graph.by_key.values())  # a flow that pauses persists
        self.location = (options.result_storage if options is not None else None) or None
        self.resume = dict(options.resume_results) if options is not None else {}
        self.chunks = dict(options.resume_chunks) if options is not None else {}
        self.graph, self.order = graph, order
        self.lineage: dict[str, str] = {}
        self.store: str | None = None
        if any(self._wants(graph.by_key[k]) for k in order):
            store = ResultStore(self.location or default_location())  # a bad URI fails here
            store.probe()  # and one that does not answer, before any work
            self.store = store.location
        if any(graph.by_key[k].task.options.cache_key_fn is not None for k in order):
            for key in order:
                node = graph.by_key[key]
                arguments = _keyed_arguments(node)
                upstream = tuple(dict.fromkeys(self.lineage.get(r._key, r._key) for r in find_refs(arguments) if isinstance(r, NodeRef)))
                constants = substitute(arguments, lambda ref: f"<upstream {ref._key}>" if isinstance(ref, NodeRef) else ref)
                if node.kind == "map":  # what it maps over is its input too
                    constants = (constants, self._mapped_lineage(node))
                self.lineage[key] = lineage_key(node.task.fn, constants, upstream)

    def _mapped_lineage(self, node: Any) -> tuple[tuple[str, str, Any], ...]:
        """A map's sources as its lineage sees them: a constant sequence by value, an upstream
        task or map by its lineage key, a generator as unknowable (nothing downstream that is
        keyed by lineage can hit)."""
        ignored = getattr(node.task.options.cache_key_fn, "ignored", frozenset())
        out = []
        for source in node.sources:
            if source.name in ignored:
                continue
            if source.kind == "const":
                out.append((source.name, "const", source.value))
            elif source.kind == "stream":
                out.append((source.name, "stream", uuid.uuid4().hex))
            else:
                out.append((source.name, source.kind, self.lineage.get(source.key, source.key)))
        return tuple(out)

    def _persists(self, node: Any) -> bool:
        options = node.task.options
        return bool(options.persist if options.persist is not None else self.flow_persist)

    def map_store(self, node: Any) -> tuple[str | None, bool]:
        """A map's (store location, persist): where its chunks are written or loaded from."""
        persist = self._persists(node)
        return (self.store if persist or node.key in self.chunks else None), persist

    def item_cache(self, node: Any) -> ItemCachePolicy | None:
        """A cached map's per-item cache, with the snapshot of segments its items are looked up in."""
        options = node.task.options
        if options.cache_key_fn is None:
            return None
        assert self.store is not None
        folder = segment_folder(self.flow_name, node.key)
        segments = () if options.refresh_cache else snapshot(ResultStore(self.store), folder, options.cache_expiration)
        return ItemCachePolicy(
            store=self.store, flow_name=self.flow_name, task_key=node.key, task_name=node.task.name,
            key_fn=options.cache_key_fn, lineage_key=self.lineage.get(node.key, ""), segments=segments,
        )

    def _wants(self, node: Any) -> bool:
        if node.kind == "map":
            return self._persists(node) or node.key in self.chunks or node.task.options.cache_key_fn is not None
        if node.kind not in ("task",):
            return False
        options = node.task.options
        persist = options.persist if options.persist is not None else self.flow_persist
        return bool(persist) or options.cache_key_fn is not None or node.key in self.resume

    def fingerprints(self) -> dict[str, str]:
        """Each persisting task's code fingerprint (one per function), for resume's warnings."""
        out: dict[str, str] = {}
        seen: dict[int, str] = {}
        for key in self.order:
            node = self.graph.by_key[key]
            options = node.task.options
            if node.kind in ("task", "map") and (options.persist if options.persist is not None else self.flow_persist):
                fn = node.task.fn
                if id(fn) not in seen:
                    try:
                        seen[id(fn)] = code_fingerprint(fn)
                    except Exception:  # noqa: BLE001 - a fingerprint only feeds a warning
                        seen[id(fn)] = ""
                out[key] = seen[id(fn)]
        return out

    def policy(self, node: Any, args: Any, kwargs: Any, value_keys: tuple[str, ...]) -> ResultPolicy | None:
        if not self._wants(node):
            return None
        options = node.task.options
        assert self.store is not None
        return ResultPolicy(
            store=self.store,
            flow_name=self.flow_name,
            task_name=node.task.name,
            persist=bool(options.persist if options.persist is not None else self.flow_persist),
            cache_key_fn=options.cache_key_fn,
            cache_expiration=options.cache_expiration,
            refresh_cache=options.refresh_cache,
            lineage_key=self.lineage.get(node.key, ""),
            load_from=self.resume.get(node.key),
        )


def _keyed_arguments(node: Any) -> Any:
    """A node's arguments as its lineage key sees them: by name, less those its policy ignores."""
    ignored = getattr(node.task.options.cache_key_fn, "ignored", frozenset())
    if not ignored:
        return (node.args, dict(node.kwargs))
    try:
        bound = inspect.signature(node.task.fn).bind_partial(*node.args, **dict(node.kwargs)).arguments
    except (TypeError, ValueError):
        return (node.args, dict(node.kwargs))
    return {name: value for name, value in bound.items() if name not in ignored}
