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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cloudpickle

from rayflow.core.fusion import plan_fusion
from rayflow.core.reducers import BY_FUNCTION
from rayflow.core.graph import Graph
from rayflow.core.options import TaskOptions
from rayflow.core.mapping import check_lengths
from rayflow.core.pausing import runner_name
from rayflow.core.refs import MapInput, NodeRef, find_refs, substitute
from rayflow.core.loader import flow_target
from rayflow.core.task import Task
from rayflow.engine.columns import to_column
from rayflow.engine.payload import dump_payload
from rayflow.engine.protocol import ASYNC_CONCURRENCY
from rayflow.engine.result_planner import ResultPlanner
from rayflow.exceptions import GraphError, MappingError, SerializationError
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
    partials: str | None = None  # an rf.reduce folded into its map's chunks: its op; it combines their parts (core.reducers)
    fold_here: bool = False  # and it has no result policy: the orchestrator may combine the parts itself (MapCoordinator.fold_here)

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
    fused: tuple[tuple[str, ...], ...] = ()  # element-wise map chains run fused, head first (core.fusion)
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
                self.results, self.flow_code, self.fused,
            ),
        )

    def with_specs(self, specs: tuple[TaskSpec, ...]) -> Plan:
        return Plan(
            self.flow_name, specs, self.result, self.params, self.reference_keys, self.flow, self.streams,
            self.target, self.resumed_from, self.code, self.driver, self.resumed_trace, self.attempt, self.results,
            self.flow_code, self.fused,
        )


def compile_plan(graph: Graph, flow: Any = None) -> Plan:
    """Validate the graph's shape and serialise each task; ``flow`` when it has state handlers."""
    params = graph.params
    order = _topological_order(graph)
    consumers = _map_consumption(graph)
    folds = _reduce_folds(graph)  # map key -> (the rf.reduce folded into its chunks, its op)
    streams: dict[int, Any] = {}
    specs = []
    results = ResultPlanner(graph, order, flow)
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
        policy = None
        if node.kind == "map":
            worker_options = _worker_options(options, count_flat=key in consumers["flatten_map"], store=results.map_store(node))
            worker_options["partial"] = folds[key][1] if key in folds else None
            attempt = flow.options.run_attempt if flow is not None else 1
            rest += ({**worker_options, "item_cache": results.item_cache(node), "run_attempt": attempt},)
        else:
            policy = results.policy(node, args, kwargs, value_keys)
            rest += (policy,)
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
                partials=(partials := next((op for reduce, op in folds.values() if reduce == key), None)),
                fold_here=partials is not None and policy is None,
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
        fused=plan_fusion(graph.nodes, flow.options if flow is not None else None).chains,
    )


def _reduce_folds(graph: Graph) -> dict[str, tuple[str, str]]:
    """The rf.reduce tasks whose one argument is a map (core.reducers): map key -> (reduce key,
    op); one per map (a second reduce of the same map runs over its values)."""
    out: dict[str, tuple[str, str]] = {}
    for node in graph.nodes:
        op = BY_FUNCTION.get(node.task.fn) if node.kind == "task" else None
        if op is None or node.kwargs or len(node.args) != 1 or not isinstance(node.args[0], NodeRef):
            continue
        upstream = graph.by_key.get(node.args[0]._key)
        if upstream is not None and upstream.kind == "map" and upstream.key not in out:
            out[upstream.key] = (node.key, op)
    return out


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
        "retries": options.retries,  # a fused chain goes on past a chunk that nothing retries (core.fusion)
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
