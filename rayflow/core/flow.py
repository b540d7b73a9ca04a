"""``@rf.flow``: a function whose body wires tasks into a static graph.

``flow.run(**params)`` validates the parameters and then traces the body
*with those values*: parameters are plain Python values, task calls record
nodes and return references, and calling another flow inlines it as a
subflow (core.subflows).  Graphs are cached per flow by parameter values
when every value is immutable (a small LRU), and traced per run otherwise.
The graph then goes to a *runner* (the Ray runtime by default, or the
in-process engine runner), which compiles it into a plan and executes it.
Runners are looked up by name among the entry points of group ``rayflow.runners``
(pyproject.toml: rayflow.runners.ray_runner and local_runner) or those registered
with ``register_runner``, and imported on first use, so this layer never names
the ones above it and ``import rayflow`` does not import Ray.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import functools
import inspect
import itertools
import pathlib
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol, overload

from rayflow.cache import code_digest
from rayflow.core.graph import Graph, GraphBuilder, active_builder
from rayflow.core.options import FlowOptions, checked_name, validate_options
from rayflow.core.parameters import is_secret, parameters_model, validate_parameters
from rayflow.exceptions import DefinitionError, GraphError, ParameterError, RayflowError
from rayflow.paths import check_run_id
from rayflow.states import error_text

GRAPH_CACHE_SIZE = 32
# Every flow of this process, in the order made (weakly: a flow no one holds drops out), so that
# rf.resume finds a flow defined in __main__, a notebook cell or a function by name and code.
_LIVE: weakref.WeakValueDictionary[int, Flow] = weakref.WeakValueDictionary()
_MADE = itertools.count()
_LIVE_LOCK = threading.Lock()  # flows are made in threads too (a server's actions): one writer or reader at a time


class Runner(Protocol):
    def run_flow(self, flow: Flow, graph: Graph) -> Any: ...


RUNNERS_GROUP = "rayflow.runners"  # entry points: a runner's name -> a factory of it
SERVE_GROUP = "rayflow.serve"  # entry point "serve": what flow.serve calls
_REGISTERED: dict[str, Callable[[], Runner]] = {}


def register_runner(name: str, factory: Callable[[], Runner]) -> None:
    """Make ``runner=name`` available to flows in this process (an installed package can
    declare an entry point of group ``rayflow.runners`` instead).  A runner has
    ``run_flow(flow, graph)``; ``graph.params`` holds the run's validated parameters."""
    if not callable(factory):
        raise DefinitionError(f"runner {name!r}: its factory must be callable, not {factory!r}")
    _REGISTERED[name] = factory


@functools.cache
def _entry_points(group: str) -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=group)}


def _entry_point(group: str, name: str) -> Any:
    found = _entry_points(group).get(name)
    if found is None:
        raise DefinitionError(
            f"no entry point {name!r} of group {group!r}: is rayflow installed (pip install -e .)? "
            f"known: {sorted(_entry_points(group))}"
        )
    return found.load()


def resolve_runner(runner: Any) -> Runner:
    if isinstance(runner, str):
        factory = _REGISTERED.get(runner)
        if factory is None:
            if runner not in _entry_points(RUNNERS_GROUP):
                known = sorted({*_REGISTERED, *_entry_points(RUNNERS_GROUP)})
                hint = "" if _entry_points(RUNNERS_GROUP) else " (no entry points: is rayflow installed? pip install -e .)"
                raise DefinitionError(f"unknown runner {runner!r}; known: {known}{hint}")
            factory = _entry_point(RUNNERS_GROUP, runner)
        return factory()
    if not hasattr(runner, "run_flow"):
        raise DefinitionError(f"runner {runner!r} has no run_flow(flow, graph) method")
    return runner


class Flow:
    """A validated, runnable flow; its graph is traced per set of parameter values."""

    def __init__(self, fn: Callable[..., Any], options: FlowOptions):
        if inspect.iscoroutinefunction(fn):
            raise DefinitionError(f"flow {fn.__qualname__} is async; flow bodies are plain functions")
        self.fn = fn
        self.options = options
        self.name: str = options.name or checked_name(fn.__name__, fn.__qualname__)
        self.parameters_model = parameters_model(fn, self.name)
        self._graphs: OrderedDict[Any, Graph] = OrderedDict()
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn)
        with _LIVE_LOCK:
            _LIVE[next(_MADE)] = self

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(self.parameters_model.model_fields)

    @functools.cached_property
    def code_id(self) -> str:
        """A digest of the flow function's code (not of the values it closes over), recorded with
        each run: ``rf.resume`` finds the run's flow among this process's flows by name and it."""
        return code_digest(self.fn)

    @property
    def graph(self) -> Graph:
        """The graph for the parameters' default values (GraphError if one has no default)."""
        return self.graph_for()

    def graph_for(self, **params: Any) -> Graph:
        """The graph a run with these parameters executes (validated, traced, cached)."""
        missing = [n for n, f in self.parameters_model.model_fields.items() if f.is_required() and n not in params]
        if missing:
            raise GraphError(
                f"flow '{self.name}' needs a value for parameter(s) {', '.join(missing)} to build its graph "
                "(its shape may depend on them); pass them, e.g. flow.graph_for(name=value) or --param name=value"
            )
        return self.build(self.validate(params))

    def build(self, values: Mapping[str, Any]) -> Graph:
        """Trace the body with validated ``values``; a cached graph when they are immutable."""
        key = _cache_key(values) if self.options.cache_graph else None
        if key is not None:
            with self._lock:
                graph = self._graphs.get(key)
                if graph is not None:
                    self._graphs.move_to_end(key)
                    return graph
        graph = self._trace(values)
        if key is not None and graph.reusable:
            with self._lock:
                self._graphs[key] = graph
                while len(self._graphs) > GRAPH_CACHE_SIZE:
                    self._graphs.popitem(last=False)
        return graph

    def _trace(self, values: Mapping[str, Any]) -> Graph:
        builder = GraphBuilder(self.name, self.parameters, self)
        with builder.activate():
            try:
                result = self.fn(**values)
            except RayflowError:
                raise
            except Exception as exc:
                raise GraphError(
                    f"building flow '{self.name}' failed: {error_text(type(exc).__name__, str(exc))}"
                ) from exc
        return builder.finish(result, values)

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Coerced parameter values, or ParameterError listing every bad field."""
        return validate_parameters(self.parameters_model, self.name, params)

    def serve(
        self,
        schedule: Any,
        parameters: Mapping[str, Any] | None = None,
        *,
        max_concurrent: int = 4,
        grace: float = 30.0,
        once: bool = False,
    ) -> int:
        """Serve this flow on ``schedule`` (an ``rf.schedules`` Interval, Cron or Union): fire its
        runs until SIGTERM/SIGINT, as ``rayflow serve`` does; returns the exit code (0)."""
        serve = _entry_point(SERVE_GROUP, "serve")  # rayflow.runners.serve_flow: above this layer
        return serve(self, schedule, parameters, max_concurrent=max_concurrent, grace=grace, once=once)

    def run(self, **params: Any) -> Any:
        """Run the flow and return its ``FlowRun``; task failures do not raise here."""
        if active_builder() is not None:
            raise GraphError(
                f"{self.name}.run() cannot be used inside a flow body; call {self.name}(...) "
                "to inline it as a subflow"
            )
        graph = self.build(self.validate(params))  # graph errors surface before any runner work
        return resolve_runner(self.options.runner).run_flow(self, graph)

    def __call__(self, *args: Any, **params: Any) -> Any:
        """Run the flow and return its value (FlowRunError if the run failed).

        Inside another flow's body, inline it as a subflow and return a reference
        to its result instead.
        """
        builder = active_builder()
        if builder is not None:
            from rayflow.core.subflows import call_subflow

            return call_subflow(builder, self, args, params)
        return self.run(**self.bind(args, params)).result()

    def bind(self, args: tuple[Any, ...], params: dict[str, Any]) -> dict[str, Any]:
        """Positional arguments as parameters, in the signature's order."""
        if not args:
            return params
        names = self.parameters
        if len(args) > len(names):
            raise ParameterError(
                f"flow '{self.name}' takes {len(names)} parameter(s) but {len(args)} were given positionally",
                flow_name=self.name,
                errors={"*args": f"too many positional arguments ({len(args)})"},
            )
        doubled = [n for n in names[: len(args)] if n in params]
        if doubled:
            raise ParameterError(
                f"flow '{self.name}': parameter(s) {doubled} given twice",
                flow_name=self.name,
                errors=dict.fromkeys(doubled, "given twice"),
            )
        return {**dict(zip(names, args)), **params}

    def with_options(self, **changes: Any) -> Flow:
        """A copy with other options: ``name``, ``runner``, ``address``, ``run_id``."""
        values = self.options.model_dump(exclude_unset=True)
        values.update(changes)
        return Flow(self.fn, _flow_options(self.name, values))

    def __repr__(self) -> str:
        return f"<Flow {self.name}>"

    def __reduce__(self) -> Any:
        # Flows travel to the orchestrator when they have state handlers; the lock and
        # the cached graphs stay behind.
        return (Flow, (self.fn, self.options))


def live_flows(name: str) -> list[Flow]:
    """This process's flows named ``name``, the newest first."""
    with _LIVE_LOCK:
        made = list(_LIVE.items())
    return [f for _, f in sorted(made, key=lambda item: item[0], reverse=True) if f.name == name]


_IMMUTABLE = (
    type(None), bool, int, float, complex, str, bytes, decimal.Decimal, fractions.Fraction,
    datetime.date, datetime.time, datetime.timedelta, datetime.tzinfo, uuid.UUID, pathlib.PurePath, enum.Enum,
)


def _cache_key(values: Mapping[str, Any]) -> Any:
    """A key for the graph cache, or None when a value could change under it (or is a generator)."""
    try:
        key = tuple((name, _frozen(value)) for name, value in values.items())
        hash(key)
    except TypeError:
        return None
    return key


def _frozen(value: Any) -> Any:
    # By type and repr, not by ==: 1, 1.0 and True, Decimal("1.0") and Decimal("1.00"), 0.0 and
    # -0.0, and aware datetimes in two time zones are equal but build different graphs.
    if is_secret(value):
        return (type(value), value)  # its repr hides the value; it compares by the value
    if isinstance(value, _IMMUTABLE):
        return (type(value), repr(value))
    if isinstance(value, (tuple, frozenset)):
        return (type(value), tuple(_frozen(v) for v in value) if isinstance(value, tuple) else frozenset(_frozen(v) for v in value))
    raise TypeError("not cacheable")


def _flow_options(owner: str, values: dict[str, Any]) -> FlowOptions:
    """A run id is refused on its own (RunIdError, the one message of rayflow.paths), at the
    call that gives it; the other options as every option is."""
    if values.get("run_id") is not None:
        check_run_id(values["run_id"])
    return validate_options(FlowOptions, owner, values)


@overload
def flow(fn: Callable[..., Any], /) -> Flow: ...
@overload
def flow(fn: None = None, /, **options: Any) -> Callable[[Callable[..., Any]], Flow]: ...


def flow(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Declare a flow: ``@rf.flow`` or ``@rf.flow(name=..., runner=..., address=...)``."""

    def decorate(f: Callable[..., Any]) -> Flow:
        return Flow(f, _flow_options(options.get("name") or f.__name__, options))

    if fn is not None:
        if options:
            raise DefinitionError("use @rf.flow or @rf.flow(**options), not both")
        return decorate(fn)
    return decorate
