"""``rf.pause``: a task waits for a person, holding no worker while it does.

The first time it is called, ``rf.pause`` raises ``signals.Pause``: the attempt ends PAUSED
at once (its worker is freed) and the orchestrator waits for a decision (engine.pauses).
Approved, the task runs again *from its start*, and this time ``rf.pause`` returns the
approved input (an instance of ``wait_for_input``, or None): code before the pause runs
twice and must be safe to (Prefect 1's resume).  The approval travels with the attempt
(``Work.approval``), set here for the attempt's thread by ``approved``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from rayflow.engine.worker.logs import current_context
from rayflow.signals import Pause, Signal

_OUTSIDE = ("outside a task",)  # the default: rf.pause called where no task runs
_APPROVAL: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("rayflow_approval", default=_OUTSIDE)


@contextlib.contextmanager
def approved(approval: tuple | None) -> Iterator[None]:
    """The attempt's approval (``(input,)``, or None when it was not approved) for rf.pause."""
    token = _APPROVAL.set(approval)
    try:
        yield
    finally:
        _APPROVAL.reset(token)


def pause(message: str = "", wait_for_input: Any = None, timeout: float | timedelta | None = None) -> Any:
    """Pause the task until ``rf.approve`` (or ``rayflow approve``) / ``rf.reject``.

    ``wait_for_input``: a pydantic model the approver's input must fit; its instance is what
    this returns once approved (None without a model).  ``timeout``: seconds (or a
    timedelta) to wait for a decision; past it the task ends FAILED "not approved within ...".
    """
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if seconds is not None and seconds <= 0:
        raise ValueError(f"rf.pause: timeout must be > 0 seconds, got {seconds}")
    approval = _APPROVAL.get()
    context = current_context()
    if context is not None and context.map_start is not None:  # an item of a map: its own decision
        decided = (getattr(context, "approvals", None) or {}).get(context.map_index())
        if decided is not None and decided[0] == "rejected":
            raise Rejected(decided[1])
        approval = None if decided is None else (decided[1],)
    elif approval is _OUTSIDE:
        raise RuntimeError("rf.pause is called inside a task (of a flow run), not elsewhere")
    if approval is not None:
        (value,) = approval
        if wait_for_input is None:
            return None
        try:
            return wait_for_input.model_validate(value if value is not None else {})
        except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError: ask again, saying why
            message = f"{message} (input refused: {_first_error(exc)})"
    schema = wait_for_input.model_json_schema() if wait_for_input is not None else None
    raise Pause(message or "waiting for approval", schema=schema, timeout=seconds)


class Rejected(Signal):
    """An item of a map whose pause was rejected (or not approved in time) ends FAILED with why."""


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "input"
        return f"{field}: {first.get('msg')}"
    return str(exc)
