"""compile_plan(graph) -> Plan: what the orchestrator executes.

The graph was traced with the run's parameter values, so its arguments are already concrete.
Compiling checks its shape, turns maps' constant inputs into Arrow columns and pickles each
task's function and arguments once, into the payload that travels to the worker.  A task that
cannot be pickled is thus a SerializationError naming it, before anything is submitted.
Compiling makes no executor (and no Ray) calls.
"""

from __future__ import annotations

import graphlib
import inspect
import os
import pickle
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cloudpickle

from rayflow.core.graph import Graph
from rayflow.core.options import TaskOptions
from rayflow.core.mapping import check_lengths
from rayflow.core.pausing import persists, runner_name
from rayflow.core.refs import MapInput, NodeRef, find_refs, substitute
from rayflow.cache import code_fingerprint, lineage_key, snapshot
from rayflow.core.loader import flow_target
from rayflow.core.task import Task
from rayflow.engine.columns import to_column
from rayflow.engine.payload import dump_payload
from rayflow.engine.protocol import ASYNC_CONCURRENCY, ItemCachePolicy, ResultPolicy
from rayflow.exceptions import GraphError, MappingError, SerializationError
from rayflow.results import ResultStore, default_location
from rayflow.results_layout import segment_folder
from rayflow.states import error_text
from rayflow.triggers import all_successful


@dataclass(frozen=True)
class CompiledSource:
    name: str
    kind: str  # const | stream | node | map | flatten_node | flatten_map
    key: str | None = None  # upstream node key
    index: int = 0  # const: index into TaskSpec.objects; stream: stream id
    length: int | None = None  # const: number of items


@dataclass(frozen=True)
class TaskSpec:
    """One node, ready to run: its payload plus the options the executor needs."""

    key: str
    name: str
    qualname: str
    payload: bytes  # cloudpickle of (fn, args, kwargs, value_keys, retry_on[, worker options]); refs left in place
    upstream: tuple[str, ...]  # values passed to the worker, in this order
    wait_for: tuple[str, ...]
    options: TaskOptions
    conditions: tuple[str, ...] = ()  # case checks this task is under
    kind: str = "task"  # "task", "map", "merge" (settled, never run) or "subflow"
    task: Any = None  # only when it has state handlers, which receive it (a subflow's: its Flow)
    value_keys: tuple[str, ...] = ()  # upstream values the payload's arguments refer to
    sources: tuple[CompiledSource, ...] = ()  # a map's mapped arguments
    objects: tuple[Any, ...] = ()  # large inputs shipped once (a map's constant sources)
    streaming: tuple[str, ...] = ()  # upstream maps consumed chunk by chunk: no barrier
    report_length: str | None = None  # "len" / "flat": a map consumes this task's result
    count_flat: bool = False  # a flatten consumes this map's results
    reference: tuple[str, ...] = ()  # a subflow: the member keys whose states decide its state
    members: tuple[str, ...] = ()  # a subflow: every key inside it
    resume_chunks: tuple[tuple[int, int, tuple[str, ...]], ...] = ()  # a map of a resumed run: stored chunks
    # Set by the Ray runner for a task no node fits yet while an autoscaler may add one:
    # seconds each of its works may wait to be placed before it fails (None: no limit).
    resource_wait: float | None = None
    items_at_once: int = 1  # a map: its chunks' items running at once at most (async / concurrency=)

    @property
    def dependencies(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.upstream + self.wait_for + self.conditions))


@dataclass(frozen=True)
class Plan:
    flow_name: str
    specs: tuple[TaskSpec, ...]  # a topological order
    result: Any  # the flow's return template, parameters substituted
    params: Mapping[str, Any]
    reference_keys: tuple[str, ...]
    flow: Any = None  # the Flow, only when it has state handlers, which receive it
    streams: Mapping[int, Any] = field(default_factory=dict)  # generator inputs; they stay with the driver
    # Recorded with the run so it can be resumed: where the flow loads from, the run it
    # resumes, and each persisting task's code fingerprint (a changed one is warned about).
    target: str | None = None
    resumed_from: str | None = None
    code: Mapping[str, str] = field(default_factory=dict)
    driver: Mapping[str, Any] = field(default_factory=dict)  # {"host", "pid"}: CRASHED once it is gone
    resumed_trace: tuple[str, str] | None = None  # the resumed run's (trace id, flow span id)
    attempt: int = 1  # the run's attempt: 1, then one more per resume
    results: str | None = None  # the result store's location, when a task persists or caches (recorded, for the UI)
    flow_code: str | None = None  # the flow function's code_id: rf.resume finds a live flow by name and it
    by_key: Mapping[str, TaskSpec] = field(init=False, repr=False)
    downstream: Mapping[str, tuple[str, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_key", MappingProxyType({s.key: s for s in self.specs}))
        down: dict[str, list[str]] = {s.key: [] for s in self.specs}
        for spec in self.specs:
            for dep in spec.dependencies:
                down[dep].append(spec.key)
        object.__setattr__(self, "downstream", MappingProxyType({k: tuple(v) for k, v in down.items()}))

    def __reduce__(self) -> Any:  # mapping proxies do not pickle; generators stay behind
        params = {k: v for k, v in self.params.items() if not isinstance(v, Iterator)}
        return (
            Plan,
            (
                self.flow_name, self.specs, self.result, params, self.reference_keys, self.flow, {},
                self.target, self.resumed_from, dict(self.code), dict(self.driver), self.resumed_trace, self.attempt,
                self.results, self.flow_code,
            ),
        )

    def with_specs(self, specs: tuple[TaskSpec, ...]) -> Plan:
        return Plan(
            self.flow_name, specs, self.result, self.params, self.reference_keys, self.flow, self.streams,
            self.target, self.resumed_from, self.code, self.driver, self.resumed_trace, self.attempt, self.results,
            self.flow_code,
        )


def compile_plan(graph: Graph, flow: Any = None) -> Plan:
    """Validate the graph's shape and serialise each task; ``flow`` when it has state handlers."""
    params = graph.params
    order = _topological_order(graph)
    consumers = _map_consumption(graph)
    streams: dict[int, Any] = {}
    specs = []
    results = _ResultPlanner(graph, order, flow)
    for key in order:
        node = graph.by_key[key]
        _check_options_pickle(node.key, node.task)
        args, kwargs = node.args, dict(node.kwargs)
        sources: tuple[CompiledSource, ...] = ()
        objects: tuple[Any, ...] = ()
        if node.kind == "map":
            args, kwargs, sources, objects = _compile_sources(node, args, kwargs, streams)
        value_keys = tuple(dict.fromkeys(r._key for r in find_refs((args, kwargs)) if isinstance(r, NodeRef)))
        options = node.task.options
        rest: tuple[Any, ...] = (args, kwargs, value_keys, options.retry_on)
        if node.kind == "map":
            worker_options = _worker_options(options, count_flat=key in consumers["flatten_map"], store=results.map_store(node))
            attempt = flow.options.run_attempt if flow is not None else 1
            rest += ({**worker_options, "item_cache": results.item_cache(node), "run_attempt": attempt},)
        else:
            rest += (results.policy(node, args, kwargs, value_keys),)
        specs.append(
            TaskSpec(
                key=node.key,
                name=node.task.name,
                qualname=node.task.qualname,
                payload=_serialise(node.key, node.task.fn, rest),
                upstream=node.upstream,
                wait_for=node.wait_for,
                options=options,
                conditions=node.conditions,
                kind=node.kind,
                task=(node.subflow.flow if node.subflow else node.task) if options.handlers else None,
                value_keys=value_keys,
                sources=sources,
                objects=objects,
                streaming=tuple(dict.fromkeys(s.key for s in node.sources if s.streaming)),
                report_length="flat" if key in consumers["flatten_node"] else "len" if key in consumers["node"] else None,
                count_flat=key in consumers["flatten_map"],
                items_at_once=_items_at_once(node.task.fn, options) if node.kind == "map" else 1,
                resume_chunks=results.chunks.get(key, ()),
                reference=node.subflow.reference if node.subflow else (),
                members=node.subflow.members if node.subflow else (),
            )
        )
    return Plan(
        flow_name=graph.flow_name,
        specs=tuple(specs),
        result=graph.result,
        params=MappingProxyType(dict(params)),
        reference_keys=graph.reference_keys(),
        flow=flow if flow is not None and flow.options.handlers else None,
        streams=streams,
        target=flow_target(flow) if flow is not None else None, flow_code=getattr(flow, "code_id", None),
        resumed_from=flow.options.resumed_from if flow is not None else None,
        code=results.fingerprints(),
        driver={"host": socket.gethostname(), "pid": os.getpid(), "runner": runner_name(flow)},
        resumed_trace=flow.options.resumed_trace if flow is not None else None,
        attempt=flow.options.run_attempt if flow is not None else 1,
        results=results.store,
    )


class _ResultPlanner:
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


def _map_consumption(graph: Graph) -> dict[str, set[str]]:
    """Which nodes maps consume, and how: as a list, flattened, or chunk by chunk."""
    out: dict[str, set[str]] = {"node": set(), "flatten_node": set(), "flatten_map": set()}
    for node in graph.nodes:
        for source in node.sources:
            if source.kind in out:
                out[source.kind].add(source.key)
    return out


def _items_at_once(fn: Any, options: TaskOptions) -> int:
    """How many of a chunk's items run at once: a batch is one call; an async task runs up to
    ``concurrency`` (default ASYNC_CONCURRENCY) on one loop; a plain one ``concurrency`` threads."""
    if options.batch:
        return 1
    if inspect.iscoroutinefunction(fn):
        return options.concurrency or ASYNC_CONCURRENCY
    return options.concurrency or 1


def _worker_options(options: TaskOptions, *, count_flat: bool, store: tuple[str | None, bool] = (None, False)) -> dict[str, Any]:
    return {
        "batch": options.batch,
        "timeout": options.timeout,
        "max_loops": options.max_loops,  # iterations an item may run (rf.Loop)
        "concurrency": options.concurrency,
        "skip_on_upstream_skip": options.skip_on_upstream_skip,
        "count_flat": count_flat,
        "store": store[0],  # where chunks are persisted or loaded from (None: neither)
        "persist": store[1],  # write each chunk's result under runs/<run id>/<map key>/
    }


def _compile_sources(
    node: Any, args: Any, kwargs: Any, streams: dict[int, Any]
) -> tuple[Any, Any, tuple[CompiledSource, ...], tuple[Any, ...]]:
    """Constant inputs become Columns; generators become streams the driver feeds."""
    compiled: list[CompiledSource] = []
    objects: list[Any] = []
    renumber: dict[int, Any] = {}
    lengths: dict[str, int | None] = {}
    for i, source in enumerate(node.sources):
        kind, value = source.kind, source.value
        if kind == "const":
            try:
                column = to_column(value)
            except (TypeError, pickle.PicklingError) as exc:
                if isinstance(exc, pickle.PicklingError) or "pickle" in str(exc):  # an item will not pickle
                    raise SerializationError(
                        f"task '{node.key}': an item of argument '{source.name}' cannot be pickled to travel "
                        f"to a worker ({error_text(type(exc).__name__, str(exc))}); map over something picklable",
                        task_key=node.key,
                    ) from None
                raise MappingError(
                    f"task '{node.key}': argument '{source.name}' is a {type(value).__name__}, which cannot be "
                    f"mapped over ({exc}); wrap it in rf.unmapped(...) to pass it whole to every item",
                    task_key=node.key,
                ) from None
            lengths[source.name] = len(column)
            objects.append(column)
            compiled.append(CompiledSource(source.name, "const", index=len(objects) - 1, length=len(column)))
        elif kind == "stream":
            stream_id = len(streams)
            streams[stream_id] = value
            compiled.append(CompiledSource(source.name, "stream", index=stream_id))
        else:
            compiled.append(CompiledSource(source.name, kind, key=source.key))
        renumber[i] = MapInput(len(compiled) - 1)
    check_lengths(node.key, lengths)

    def swap(ref: Any) -> Any:
        return renumber[ref.index] if isinstance(ref, MapInput) else ref

    return substitute(args, swap), substitute(kwargs, swap), tuple(compiled), tuple(objects)


def _topological_order(graph: Graph) -> list[str]:
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for node in graph.nodes:
        unknown = [d for d in node.dependencies if d not in graph.by_key]
        if unknown:
            raise GraphError(f"task '{node.key}' depends on unknown task(s) {unknown}", task_key=node.key)
        sorter.add(node.key, *node.dependencies)
    try:
        static = list(sorter.static_order())
    except graphlib.CycleError as exc:
        raise GraphError(f"flow '{graph.flow_name}' has a cycle: {' -> '.join(exc.args[1])}") from None
    # Keep call order where it is already valid: it is deterministic and easy to read.
    position = {k: i for i, k in enumerate(static)}
    call_order = [n.key for n in graph.nodes]
    if all(position[d] < position[n.key] for n in graph.nodes for d in n.dependencies):
        return call_order
    return static


def _check_options_pickle(key: str, task: Task) -> None:
    """Triggers and state handlers run in the orchestrator's process: they must travel too."""
    options = task.options
    if not options.handlers and options.trigger is all_successful:
        return
    try:
        cloudpickle.dumps(options)
    except Exception as exc:
        raise SerializationError(
            f"task '{key}': its trigger or state handlers cannot be pickled ({error_text(type(exc).__name__, str(exc))})",
            task_key=key,
        ) from exc


def _serialise(key: str, fn: Any, rest: tuple[Any, ...]) -> bytes:
    try:
        return dump_payload((fn, *rest))
    except Exception as exc:
        error = exc
    try:  # only on failure: find out which part is to blame
        cloudpickle.dumps(fn)
    except Exception:
        raise SerializationError(
            f"task '{key}': its function {getattr(fn, '__qualname__', fn)!r} cannot be pickled "
            f"to run on a worker ({error_text(type(error).__name__, str(error))})",
            task_key=key,
        ) from error
    raise SerializationError(
        f"task '{key}': an argument cannot be pickled to travel to a worker "
        f"({error_text(type(error).__name__, str(error))}); pass something picklable, or build it inside the task",
        task_key=key,
    ) from error
