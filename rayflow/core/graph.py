"""The static flow graph: nodes recorded while a flow body is traced.

Tracing runs the flow function with the run's validated parameter values.
Each task call inside it goes through the active ``GraphBuilder`` (a context
variable), which checks the call's binding, names the node and returns a
``NodeRef``.  A flow called inside the body is inlined as a *subflow*: its
nodes are recorded in a scope of their own (keys ``inner/...``) and a
subflow node, keyed by the subflow's name, stands for its result.  The
finished ``Graph`` is immutable: nodes only refer to nodes recorded before
them, so it is acyclic by construction and its node order is a valid
topological order.
"""

from __future__ import annotations

import contextvars
import inspect
import itertools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from rayflow.core.mapping import classify
from rayflow.core.refs import NodeRef, find_refs, may_hold_refs, unique_refs
from rayflow.exceptions import GraphError

if TYPE_CHECKING:
    from rayflow.core.task import Task


@dataclass(frozen=True)
class Subflow:
    """What a subflow node carries: the flow (its handlers apply), its member and reference keys."""

    flow: Any
    members: tuple[str, ...]  # every node recorded inside it, nested subflows' included
    reference: tuple[str, ...]  # the members whose states decide the subflow's state


@dataclass(frozen=True)
class Node:
    """One call of a task (or of a subflow) in a flow body."""

    key: str
    task: Task
    args: tuple[Any, ...]  # templates: values with NodeRefs inside
    kwargs: Mapping[str, Any]
    upstream: tuple[str, ...]  # keys whose values this node consumes, in first-use order
    wait_for: tuple[str, ...]  # keys that must finish first, values not passed
    conditions: tuple[str, ...] = ()  # case() checks this node was created under
    kind: str = "task"  # "task", "map", "merge" or "subflow" (both settled by the orchestrator)
    sources: tuple[Any, ...] = ()  # a map's mapped arguments (core.mapping.MapSource)
    subflow: Subflow | None = None

    @property
    def dependencies(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.upstream + self.wait_for + self.conditions))

    @property
    def group(self) -> str:
        """The key of the subflow this node belongs to ("" at the top level)."""
        return self.key.rpartition("/")[0]

    @property
    def name(self) -> str:
        return self.task.name


@dataclass(frozen=True)
class Graph:
    """An immutable flow graph; ``nodes`` is in call order, a topological order."""

    flow_name: str
    nodes: tuple[Node, ...]
    result: Any  # template of the flow's return value
    parameters: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)  # the values it was traced with
    reference: tuple[str, ...] | None = None  # set_reference_tasks(); None: the terminal tasks
    by_key: Mapping[str, Node] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_key", MappingProxyType({n.key: n for n in self.nodes}))

    def downstream(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {n.key: [] for n in self.nodes}
        for node in self.nodes:
            for dep in node.dependencies:
                out[dep].append(node.key)
        return out

    def terminal_keys(self) -> tuple[str, ...]:
        down = self.downstream()
        return tuple(key for key, children in down.items() if not children)

    def reference_keys(self) -> tuple[str, ...]:
        """The tasks whose states decide the flow's state."""
        return self.reference if self.reference is not None else self.terminal_keys()

    def shape(self) -> dict[str, Any]:
        """The graph as plain data: what `rayflow graph` draws and the run history keeps."""
        return shape_of(self.flow_name, self.nodes)

    @property
    def reusable(self) -> bool:
        """False when a node consumes a generator: a second run would find it exhausted."""
        return not any(s.kind == "stream" for n in self.nodes for s in n.sources)


def shape_of(flow_name: str, nodes: Any, fused: Any = ()) -> dict[str, Any]:
    """Nodes (graph nodes or plan specs) as JSON-safe data; a subflow's group is its key's prefix;
    ``fused``: the map chains that run fused (core.fusion), when there are any."""
    return {
        "flow": flow_name,
        "nodes": [
            {
                "key": n.key,
                "name": n.name,
                "kind": n.kind,
                "upstream": list(n.upstream),
                "wait_for": list(n.wait_for),
                "conditions": list(n.conditions),
            }
            for n in nodes
        ],
    } | ({"fused": [list(chain) for chain in fused]} if fused else {})


_BUILDER: contextvars.ContextVar[GraphBuilder | None] = contextvars.ContextVar(
    "rayflow_graph_builder", default=None
)
_builder_ids = itertools.count(1)


def active_builder() -> GraphBuilder | None:
    return _BUILDER.get()


@dataclass
class _Scope:
    """One flow body being traced: the root flow, or a subflow inside it."""

    flow: Any
    prefix: str  # "" for the root, "outer/inner/" for a nested subflow
    start: int  # index of its first node
    names: dict[str, int] = field(default_factory=dict)
    reference: tuple[str, ...] | None = None


class GraphBuilder:
    """Collects the nodes of one trace of a flow body."""

    def __init__(self, flow_name: str, parameters: tuple[str, ...], flow: Any = None):
        self.flow_name = flow_name
        self.parameters = parameters
        self.token = next(_builder_ids)
        self._nodes: list[Node] = []
        self._cases: list[str] = []  # keys of the case checks of the enclosing `with rf.case` blocks
        self._scopes: list[_Scope] = [_Scope(flow, "", 0)]
        self._keys: set[str] = set()

    @contextmanager
    def activate(self) -> Iterator[GraphBuilder]:
        if _BUILDER.get() is not None:
            raise GraphError(
                "another flow's graph cannot be built inside a flow body (flow.run() or graph_for()); "
                "call the flow instead (inner(x=...)) to inline it as a subflow"
            )
        reset = _BUILDER.set(self)
        try:
            yield self
        finally:
            _BUILDER.reset(reset)

    def next_key(self, name: str) -> str:
        """``name``, then ``name-2``, ...: unique even when a task is *named* ``name-2``."""
        scope = self._scopes[-1]
        count = scope.names.get(name, 0)
        while True:
            count += 1
            key = scope.prefix + (name if count == 1 else f"{name}-{count}")
            if key not in self._keys:
                break
        scope.names[name] = count
        self._keys.add(key)
        return key

    def tracing(self, flow: Any) -> bool:
        """True when ``flow`` (or a copy of it with other options) is already being traced here."""
        return any(getattr(scope.flow, "fn", None) is flow.fn for scope in self._scopes)

    @property
    def current_flow_name(self) -> str:
        return self._scopes[-1].prefix.rstrip("/") or self.flow_name

    def _check_refs(self, refs: list[Any], where: str) -> None:
        for ref in refs:
            if isinstance(ref, NodeRef) and ref._owner != self.token:
                raise GraphError(f"{where} uses {ref._describe()}, which belongs to another flow")

    @contextmanager
    def case_block(self, check: NodeRef) -> Iterator[None]:
        """Nodes created inside depend on ``check`` and are skipped when it is skipped."""
        self._cases.append(check._key)
        try:
            yield
        finally:
            self._cases.pop()

    def set_reference(self, refs: tuple[Any, ...]) -> None:
        for ref in refs:
            if not isinstance(ref, NodeRef):
                raise GraphError(f"set_reference_tasks takes task results of this flow, got {ref!r}")
        self._check_refs(list(refs), "set_reference_tasks")
        prefix = self._scopes[-1].prefix
        outside = [r._key for r in refs if not r._key.startswith(prefix)]
        if outside:
            raise GraphError(
                f"set_reference_tasks inside subflow '{prefix.rstrip('/')}' takes results of its own tasks; "
                f"{outside} belong to the flow that calls it"
            )
        self._scopes[-1].reference = tuple(dict.fromkeys(r._key for r in refs))

    @contextmanager
    def subflow_scope(self, key: str, flow: Any) -> Iterator[_Scope]:
        """Nodes recorded inside are the subflow ``key``'s, keyed ``key/...``."""
        scope = _Scope(flow, key + "/", len(self._nodes))
        self._scopes.append(scope)
        try:
            yield scope
        except BaseException:
            # A body that raised leaves no half-recorded subflow behind, should the caller catch it.
            self._keys.difference_update(n.key for n in self._nodes[scope.start :])
            del self._nodes[scope.start :]
            raise
        finally:
            self._scopes.pop()

    def add_subflow(self, key: str, task: Task, scope: _Scope, result: Any) -> NodeRef:
        """The node standing for a finished subflow scope: it waits for every member."""
        members = [n for n in self._nodes[scope.start :]]
        used = {dep for n in members for dep in n.dependencies}
        reference = scope.reference
        if reference is None:
            reference = tuple(n.key for n in members if n.key not in used)
        info = Subflow(scope.flow, tuple(n.key for n in members), reference)
        waits = [NodeRef(n.key, self.token) for n in members]
        return self._record(task, key, (result,), {}, waits, kind="subflow", subflow=info)

    def add_map(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any) -> NodeRef:
        """A mapped call: arguments are bound by name, mapped ones become MapInput markers."""
        key = self.next_key(task.name)
        check_binding(task, key, args, kwargs)
        bound = task.signature.bind(*args, **kwargs)
        kinds = {n.key: n.kind for n in self._nodes}
        slots = argument_slots(task, bound.arguments)
        classified, sources = classify(key, slots, kinds)
        call_args, call_kwargs = rebuild_call(task, classified)
        return self._record(task, key, call_args, call_kwargs, wait_for, kind="map", sources=tuple(sources))

    def add_call(
        self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any, *, kind: str = "task"
    ) -> NodeRef:
        key = self.next_key(task.name)
        if kind == "task":
            check_binding(task, key, args, kwargs)
        return self._record(task, key, args, kwargs, wait_for, kind=kind)

    def _record(
        self,
        task: Task,
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: Any,
        *,
        kind: str,
        sources: tuple[Any, ...] = (),
        subflow: Subflow | None = None,
    ) -> NodeRef:
        found = find_refs((args, kwargs)) if may_hold_refs(args, kwargs) else []
        if sources:
            found = [NodeRef(s.key, s.owner) for s in sources if s.kind in _NODE_SOURCES] + found
        refs = [r for r in unique_refs(found) if isinstance(r, NodeRef)]
        if any(r._owner != self.token for r in refs):
            self._check_refs(refs, f"task '{key}'")
        waits = _wait_for_keys(wait_for, key) if wait_for is not None else []
        if waits:
            self._check_refs([NodeRef(k, o) for k, o in waits], f"wait_for of task '{key}'")
        node = Node(
            key=key,
            task=task,
            args=tuple(args),
            kwargs=MappingProxyType(dict(kwargs)),
            upstream=tuple(dict.fromkeys(r._key for r in refs)),
            wait_for=tuple(dict.fromkeys(k for k, _ in waits)),
            conditions=tuple(self._cases),
            kind=kind,
            sources=sources,
            subflow=subflow,
        )
        self._nodes.append(node)
        return NodeRef(key, self.token)

    def finish(self, result: Any, params: Mapping[str, Any]) -> Graph:
        self._check_refs(find_refs(result), "the flow's return value")
        return Graph(
            flow_name=self.flow_name,
            nodes=tuple(self._nodes),
            result=result,
            parameters=self.parameters,
            params=MappingProxyType(dict(params)),
            reference=self._scopes[0].reference,
        )


_NODE_SOURCES = ("node", "map", "flatten_node", "flatten_map")


def argument_slots(task: Task, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """One entry per argument as written: *args elements as "name[i]", **kwargs by their keys."""
    slots: dict[str, Any] = {}
    for p in task.signature.parameters.values():
        if p.name not in arguments:
            continue
        if p.kind is p.VAR_POSITIONAL:
            slots.update({f"{p.name}[{i}]": v for i, v in enumerate(arguments[p.name])})
        elif p.kind is p.VAR_KEYWORD:
            slots.update(arguments[p.name])
        else:
            slots[p.name] = arguments[p.name]
    return slots


def rebuild_call(task: Task, slots: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Argument slots back into (args, kwargs) that call the function the same way.

    Leading parameters go positionally while there is no gap (``fn(x)``, not
    ``fn(x=x)``): it is the cheaper call for a map's per-item loop.
    """
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    positional = True
    for p in task.signature.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            i = 0
            while f"{p.name}[{i}]" in slots:
                args.append(slots[f"{p.name}[{i}]"])
                i += 1
            positional = False
        elif p.kind is p.VAR_KEYWORD:
            kwargs.update({k: v for k, v in slots.items() if k not in task.signature.parameters and "[" not in k})
        elif p.name not in slots:
            positional = False
        elif p.kind is p.POSITIONAL_ONLY or (positional and p.kind is p.POSITIONAL_OR_KEYWORD):
            args.append(slots[p.name])
        else:
            positional = False
            kwargs[p.name] = slots[p.name]
    return tuple(args), kwargs


def _wait_for_keys(wait_for: Any, key: str) -> list[tuple[str, int]]:
    if wait_for is None:
        return []
    items = [wait_for] if isinstance(wait_for, NodeRef) else wait_for
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise GraphError(f"task '{key}': wait_for must be a task result or a list of them, got {type(wait_for).__name__}", task_key=key)
    out = []
    for item in items:
        if not isinstance(item, NodeRef):
            raise GraphError(
                f"task '{key}': wait_for may only hold task results from this flow, got {item!r}",
                task_key=key,
            )
        out.append((item._key, item._owner))
    return out


def check_binding(task: Task, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise GraphError naming the argument when a call does not fit the task's signature."""
    if not kwargs and task.positional_arity == len(args):
        return
    sig = task.signature
    try:
        sig.bind(*args, **kwargs)
        return
    except TypeError as exc:
        reason = str(exc)
    params = sig.parameters
    kinds = {p.kind for p in params.values()}
    problems = []
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        for name in kwargs:
            if name not in params or params[name].kind is inspect.Parameter.POSITIONAL_ONLY:
                problems.append(f"unexpected argument '{name}'")
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if inspect.Parameter.VAR_POSITIONAL not in kinds and len(args) > len(positional):
        problems.append(f"takes {len(positional)} positional argument(s) but {len(args)} were given")
    given = {p.name for p in positional[: len(args)]} | set(kwargs)
    for p in params.values():
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in given:
            problems.append(f"missing required argument '{p.name}'")
    detail = "; ".join(problems) or reason
    raise GraphError(f"task '{key}' ({task.qualname}) cannot be called like this: {detail}", task_key=key)
