"""``@rf.flow``: a function whose body wires tasks into a static graph.

The body is traced once, lazily, with parameter placeholders; the graph is
cached on the Flow.  Running a flow validates its parameters here and then
hands over to a *runner* (the Ray runtime by default, or the in-process
engine runner), which compiles the graph into a plan and executes it.
Runners are looked up by name and imported on first use, so this layer never
imports the ones above it and ``import rayflow`` does not import Ray.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import threading
from collections.abc import Callable
from typing import Any, Protocol, overload

from rayflow.core.graph import Graph, GraphBuilder
from rayflow.core.options import FlowOptions, validate_options
from rayflow.core.parameters import parameters_model, validate_parameters
from rayflow.exceptions import DefinitionError, GraphError


class Runner(Protocol):
    def run_flow(self, flow: Flow, params: dict[str, Any]) -> Any: ...


# Runners by name: a factory, or "module:attribute" imported on first use, so that
# `import rayflow` and compiling a plan never import Ray.
_RUNNERS: dict[str, Callable[[], Runner] | str] = {
    "ray": "rayflow.runtime.runner:RayRunner",
    "local": "rayflow.engine.local:LocalRunner",
}


def register_runner(name: str, factory: Callable[[], Runner] | str) -> None:
    """Make ``runner=name`` available to flows: a factory, or a "module:attribute" path to one."""
    _RUNNERS[name] = factory


def resolve_runner(runner: Any) -> Runner:
    if isinstance(runner, str):
        try:
            factory = _RUNNERS[runner]
        except KeyError:
            raise DefinitionError(f"unknown runner {runner!r}; known: {sorted(_RUNNERS)}") from None
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        return factory()
    if not hasattr(runner, "run_flow"):
        raise DefinitionError(f"runner {runner!r} has no run_flow(flow, params) method")
    return runner


class Flow:
    """A traced-once, validated, runnable flow."""

    def __init__(self, fn: Callable[..., Any], options: FlowOptions):
        if inspect.iscoroutinefunction(fn):
            raise DefinitionError(f"flow {fn.__qualname__} is async; flow bodies are plain functions")
        self.fn = fn
        self.options = options
        self.name: str = options.name or fn.__name__
        self.parameters_model = parameters_model(fn, self.name)
        self._graph: Graph | None = None
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn)

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(self.parameters_model.model_fields)

    @property
    def graph(self) -> Graph:
        """The flow's static graph, traced on first use and cached."""
        with self._lock:
            if self._graph is None:
                self._graph = self._trace()
            return self._graph

    def _trace(self) -> Graph:
        builder = GraphBuilder(self.name, self.parameters)
        with builder.activate():
            try:
                result = self.fn(**builder.param_refs())
            except GraphError:
                raise
            except Exception as exc:
                raise GraphError(
                    f"building flow '{self.name}' failed: {type(exc).__name__}: {exc}"
                ) from exc
        return builder.finish(result)

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Coerced parameter values, or ParameterError listing every bad field."""
        return validate_parameters(self.parameters_model, self.name, params)

    def run(self, **params: Any) -> Any:
        """Run the flow and return its ``FlowRun``; task failures do not raise here."""
        values = self.validate(params)
        self.graph  # noqa: B018 - trace (and surface graph errors) before any runner work
        return resolve_runner(self.options.runner).run_flow(self, values)

    def __call__(self, **params: Any) -> Any:
        """Run the flow and return its value; raises FlowRunError if the run failed."""
        return self.run(**params).result()

    def with_options(self, **changes: Any) -> Flow:
        """A copy with other options: ``name``, ``runner``, ``address``, ``run_id``."""
        values = self.options.model_dump(exclude_unset=True)
        values.update(changes)
        return Flow(self.fn, validate_options(FlowOptions, self.name, values))

    def __repr__(self) -> str:
        return f"<Flow {self.name}>"

    def __reduce__(self) -> Any:
        # Flows travel to the orchestrator when they have state handlers; the lock and
        # the cached graph stay behind.
        return (Flow, (self.fn, self.options))


@overload
def flow(fn: Callable[..., Any], /) -> Flow: ...
@overload
def flow(fn: None = None, /, **options: Any) -> Callable[[Callable[..., Any]], Flow]: ...


def flow(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Declare a flow: ``@rf.flow`` or ``@rf.flow(name=..., runner=..., address=...)``."""

    def decorate(f: Callable[..., Any]) -> Flow:
        return Flow(f, validate_options(FlowOptions, options.get("name") or f.__name__, options))

    if fn is not None:
        if options:
            raise DefinitionError("use @rf.flow or @rf.flow(**options), not both")
        return decorate(fn)
    return decorate
