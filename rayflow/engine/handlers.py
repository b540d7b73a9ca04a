"""State handlers: user callables run on every transition, in the orchestrator.

``h(subject, old, new)`` returns None to keep ``new`` or a State to replace
it; the next handler sees the replacement.  A handler that raises ends the
chain: the state becomes FAILED with a message naming the handler.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from rayflow.engine.observers import RunObserver
from rayflow.engine.plan import Plan
from rayflow.engine.protocol import describe_error
from rayflow.notify.context import HandlerRun, calling
from rayflow.states import State, StateType, error_text


def handler_name(handler: Callable[..., Any]) -> str:
    return getattr(handler, "__qualname__", None) or getattr(handler, "__name__", None) or repr(handler)


def apply_handlers(handlers: Sequence[Callable[..., Any]], subject: Any, old: State, new: State) -> State:
    for handler in handlers:
        try:
            out = handler(subject, old, new)
        except Exception as exc:  # the user's handler; its failure is the task's failure
            failure = ""
            if new.is_failed():  # an on_failure handler that raises keeps the failure it handled
                failure = f" while handling: {new.message}"
                if new.exception is not None and new.exception is not exc and exc.__cause__ is None:
                    exc.__cause__ = new.exception  # in the state's exception, its traceback, the history
                    # and across pickling (from the actor to the driver): an exception pickles its args
                    # and __dict__ only, and unpickling sets each __dict__ entry back as an attribute
                    exc.__dict__.setdefault("__cause__", new.exception)
            return State(
                type=StateType.FAILED,
                message=f"state handler {handler_name(handler)} raised {error_text(type(exc).__name__, str(exc))}{failure}",
                attempt=new.attempt,
                started_at=new.started_at,
                finished_at=new.finished_at,
                error=describe_error(exc),
                exception=exc,
            )
        if out is None:
            continue
        if not isinstance(out, State):
            return State(
                type=StateType.FAILED,
                message=f"state handler {handler_name(handler)} returned {type(out).__name__}, not a State or None",
                attempt=new.attempt,
            )
        new = out
    return new


class StateHandlers(RunObserver):
    """The tasks' and the flow's state handlers, as the observer that may amend each new state.

    While they run, ``rayflow.notify.context.current()`` names the run, the task and ``log`` (a
    record in the run's logs), which a handler's arguments do not (the notifiers use it)."""

    def __init__(self, plan: Plan, orchestrator: Any = None):
        self.plan = plan
        self.run_id = getattr(orchestrator, "run_id", "")
        self._orchestrator = orchestrator

    def log(self, level: str, message: str, task_key: str | None = None) -> None:
        """A record in the run's logs, through the orchestrator's ``on_log`` observers (any thread)."""
        record = (time.time(), level, message, task_key, None, None, None)
        for hook in getattr(self._orchestrator, "_on_log", ()):
            hook(run_id=self.run_id, records=[record])

    def amend(self, *, task_key: str | None, old: State, new: State) -> State:
        if task_key is None:
            flow = self.plan.flow
            if flow is None or not flow.options.handlers:
                return new
            handlers, subject = flow.options.handlers, flow
        else:
            spec = self.plan.by_key[task_key]
            handlers, subject = spec.options.handlers, spec.task
            if not handlers:
                return new
        with calling(HandlerRun(self.run_id, self.plan.flow_name, task_key, self.log)):
            return apply_handlers(handlers, subject, old, new)
