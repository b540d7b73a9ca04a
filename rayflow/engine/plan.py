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
from rayflow.exceptions import GraphError, SerializationError


@dataclass(frozen=True)
class TaskSpec:
    """One node, ready to run: its payload plus the options the executor needs."""

    key: str
    name: str
    qualname: str
    payload: bytes  # cloudpickle of (fn, args, kwargs, upstream); refs to upstream left in place
    upstream: tuple[str, ...]  # values passed to the worker, in this order
    wait_for: tuple[str, ...]
    options: TaskOptions

    @property
    def dependencies(self) -> tuple[str, ...]:
        return self.upstream + tuple(k for k in self.wait_for if k not in self.upstream)


@dataclass(frozen=True)
class Plan:
    flow_name: str
    specs: tuple[TaskSpec, ...]  # a topological order
    result: Any  # the flow's return template, parameters substituted
    params: Mapping[str, Any]
    reference_keys: tuple[str, ...]
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
        return (Plan, (self.flow_name, self.specs, self.result, dict(self.params), self.reference_keys))


def compile_plan(graph: Graph, params: Mapping[str, Any]) -> Plan:
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
        args = substitute(node.args, bind)
        kwargs = substitute(dict(node.kwargs), bind)
        specs.append(
            TaskSpec(
                key=node.key,
                name=node.task.name,
                qualname=node.task.qualname,
                payload=_serialise(node.key, node.task.fn, args, kwargs, node.upstream),
                upstream=node.upstream,
                wait_for=node.wait_for,
                options=node.task.options,
            )
        )
    return Plan(
        flow_name=graph.flow_name,
        specs=tuple(specs),
        result=substitute(graph.result, bind),
        params=MappingProxyType(dict(params)),
        reference_keys=graph.terminal_keys(),
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


def _serialise(key: str, fn: Any, args: Any, kwargs: Any, upstream: tuple[str, ...]) -> bytes:
    try:
        return cloudpickle.dumps((fn, args, kwargs, upstream))
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
