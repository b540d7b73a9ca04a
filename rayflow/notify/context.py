"""The run a state handler is called for: set by the engine's StateHandlers around each call.

A handler's arguments are ``(subject, old, new)``; a notifier needs more (the run's id, the flow's
name, the task's key, where to write a warning), so the orchestrator puts them here while its
handlers run.  ``current()`` is None outside a handler call (a handler called by hand)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# log(level, message, task_key): a record in the run's logs (the history's logs table)
LogFn = Callable[[str, str, "str | None"], None]


@dataclass(frozen=True)
class HandlerRun:
    run_id: str
    flow_name: str
    task_key: str | None  # None: the flow's own state
    log: LogFn | None = None


_CURRENT: contextvars.ContextVar[HandlerRun | None] = contextvars.ContextVar("rayflow_handler_run", default=None)


def current() -> HandlerRun | None:
    return _CURRENT.get()


@contextlib.contextmanager
def calling(run: HandlerRun) -> Iterator[None]:
    token = _CURRENT.set(run)
    try:
        yield
    finally:
        _CURRENT.reset(token)
