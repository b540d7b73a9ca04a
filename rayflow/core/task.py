"""``@rf.task``: a Python function plus the options that say how it runs.

Inside a flow body a call records a node and returns a ``NodeRef``; anywhere
else it is a plain call of the function, so tasks stay easy to unit-test.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, overload

from rayflow.core.graph import active_builder, argument_slots, rebuild_call
from rayflow.core.mapping import check_lengths, classify
from rayflow.core.refs import MapInput
from rayflow.core.options import TaskOptions, checked_name, validate_options
from rayflow.exceptions import DefinitionError


class Task:
    """A function that rayflow can run as a node of a flow."""

    def __init__(self, fn: Callable[..., Any], options: TaskOptions):
        if not callable(fn):
            raise DefinitionError(f"@rf.task needs a function, got {fn!r}")
        if inspect.isasyncgenfunction(fn):
            raise DefinitionError(
                f"task {_qualname(fn)} is an async generator; a task returns its value (async def tasks are fine)"
            )
        self.fn = fn
        self.options = options
        self.name: str = options.name or checked_name(getattr(fn, "__name__", None) or type(fn).__name__, _qualname(fn))
        self.qualname = _qualname(fn)
        self.signature = inspect.signature(fn)
        # Tracing's fast path: how many positional arguments bind with no further check
        # (every parameter positional, none with a default); None when that does not apply.
        kinds = [p.kind for p in self.signature.parameters.values()]
        simple = all(k is inspect.Parameter.POSITIONAL_OR_KEYWORD for k in kinds) and all(
            p.default is p.empty for p in self.signature.parameters.values()
        )
        self.positional_arity: int | None = len(kinds) if simple else None
        if "wait_for" in self.signature.parameters:
            raise DefinitionError(
                f"task {self.qualname} has a parameter named 'wait_for', which rayflow reserves "
                "for order-only dependencies; rename it"
            )
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, wait_for: Any = None, **kwargs: Any) -> Any:
        builder = active_builder()
        if builder is None:
            return self.fn(*args, **kwargs)
        return builder.add_call(self, args, kwargs, wait_for)

    def map(self, *args: Any, wait_for: Any = None, **kwargs: Any) -> Any:
        """Run the task once per item of the mapped arguments (zipped); see core.mapping.

        Outside a flow this is a plain loop over the items, for unit tests.
        """
        builder = active_builder()
        if builder is None:
            return _map_outside_flow(self, args, kwargs)
        return builder.add_map(self, args, kwargs, wait_for)

    def with_options(self, **changes: Any) -> Task:
        """A copy of this task with some options changed (validated like the decorator's)."""
        values = self.options.model_dump(exclude_unset=True)
        values.update(changes)
        options = validate_options(TaskOptions, self.name, values)
        return Task(self.fn, options)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __reduce__(self) -> Any:
        # Tasks travel inside plans; rebuild rather than copy the wrapper's __dict__.
        return (Task, (self.fn, self.options))


def _map_outside_flow(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """A plain zip loop (batch tasks get each mapped argument as a list)."""
    slots = argument_slots(task, task.signature.bind(*args, **kwargs).arguments)
    template, sources = classify(task.name, slots, {})
    columns = [list(source.value) for source in sources]
    check_lengths(task.name, {source.name: len(c) for source, c in zip(sources, columns)})

    def call(values: list[Any]) -> Any:
        filled = {k: values[v.index] if isinstance(v, MapInput) else v for k, v in template.items()}
        call_args, call_kwargs = rebuild_call(task, filled)
        return task.fn(*call_args, **call_kwargs)

    if task.options.batch:
        return list(call(columns))
    return [call(list(items)) for items in zip(*columns)]


def _qualname(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"


@overload
def task(fn: Callable[..., Any], /) -> Task: ...
@overload
def task(
    fn: None = None, /, **options: Any
) -> Callable[[Callable[..., Any]], Task]: ...


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Declare a task: ``@rf.task`` or ``@rf.task(retries=2, num_cpus=1, ...)``.

    Options are validated now; a bad one raises ``TaskOptionError`` naming it.
    """

    def decorate(f: Callable[..., Any]) -> Task:
        owner = options.get("name") or getattr(f, "__name__", repr(f))
        return Task(f, validate_options(TaskOptions, str(owner), options))

    if fn is not None:
        if options:
            raise DefinitionError("use @rf.task or @rf.task(**options), not both")
        return decorate(fn)
    return decorate
