"""compile_plan(graph, params) -> Plan: what the orchestrator executes.

Compiling substitutes the validated parameter values into every node's
arguments and pickles each task's function and arguments once, into the
payload that travels to the worker.  A task that cannot be pickled is thus a
SerializationError naming it, before anything is submitted.  Compiling makes
no executor (and no Ray) calls.
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cloudpickle

from rayflow.core.graph import Graph
from rayflow.core.options import TaskOptions
from rayflow.core.refs import ParamRef, substitute
from rayflow.core.task import Task
from rayflow.exceptions import GraphError, SerializationError
from rayflow.triggers import all_successful


@dataclass(frozen=True)
class TaskSpec:
    """One node, ready to run: its payload plus the options the executor needs."""

    key: str
    name: str
    qualname: str
    payload: bytes  # cloudpickle of (fn, args, kwargs, upstream, retry_on); refs left in place
    upstream: tuple[str, ...]  # values passed to the worker, in this order
    wait_for: tuple[str, ...]
    options: TaskOptions
    conditions: tuple[str, ...] = ()  # case checks this task is under
    kind: str = "task"  # or "merge": settled by the orchestrator, never run
    task: Task | None = None  # only when it has state handlers, which receive it

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
    by_key: Mapping[str, TaskSpec] = field(init=False, repr=False)
    downstream: Mapping[str, tuple[str, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_key", MappingProxyType({s.key: s for s in self.specs}))
        down: dict[str, list[str]] = {s.key: [] for s in self.specs}
        for spec in self.specs:
            for dep in spec.dependencies:
                down[dep].append(spec.key)
        object.__setattr__(self, "downstream", MappingProxyType({k: tuple(v) for k, v in down.items()}))

    def __reduce__(self) -> Any:  # mapping proxies do not pickle; rebuild them
        return (Plan, (self.flow_name, self.specs, self.result, dict(self.params), self.reference_keys, self.flow))


def compile_plan(graph: Graph, params: Mapping[str, Any], flow: Any = None) -> Plan:
    """Validate the graph's shape, bind parameter values and serialise each task."""
    missing = [p for p in graph.parameters if p not in params]
    if missing:
        raise GraphError(f"flow '{graph.flow_name}': no value for parameter(s) {missing}")
    order = _topological_order(graph)

    def bind(ref: Any) -> Any:
        return params[ref.name] if isinstance(ref, ParamRef) else ref

    specs = []
    for key in order:
        node = graph.by_key[key]
        _check_options_pickle(node.key, node.task)
        args = substitute(node.args, bind)
        kwargs = substitute(dict(node.kwargs), bind)
        specs.append(
            TaskSpec(
                key=node.key,
                name=node.task.name,
                qualname=node.task.qualname,
                payload=_serialise(node.key, node.task.fn, (args, kwargs, node.upstream, node.task.options.retry_on)),
                upstream=node.upstream,
                wait_for=node.wait_for,
                options=node.task.options,
                conditions=node.conditions,
                kind=node.kind,
                task=node.task if node.task.options.handlers else None,
            )
        )
    return Plan(
        flow_name=graph.flow_name,
        specs=tuple(specs),
        result=substitute(graph.result, bind),
        params=MappingProxyType(dict(params)),
        reference_keys=graph.reference_keys(),
        flow=flow if flow is not None and flow.options.handlers else None,
    )


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
            f"task '{key}': its trigger or state handlers cannot be pickled ({type(exc).__name__}: {exc})",
            task_key=key,
        ) from exc


def _serialise(key: str, fn: Any, rest: tuple[Any, ...]) -> bytes:
    try:
        return cloudpickle.dumps((fn, *rest))
    except Exception as exc:
        error = exc
    try:  # only on failure: find out which part is to blame
        cloudpickle.dumps(fn)
    except Exception:
        raise SerializationError(
            f"task '{key}': its function {getattr(fn, '__qualname__', fn)!r} cannot be pickled "
            f"to run on a worker ({type(error).__name__}: {error})",
            task_key=key,
        ) from error
    raise SerializationError(
        f"task '{key}': an argument cannot be pickled to travel to a worker "
        f"({type(error).__name__}: {error}); pass something picklable, or build it inside the task",
        task_key=key,
    ) from error
