"""One attempt of one task, inside whatever process runs it.

``run_attempt`` is what a worker executes: it unpickles the payload, puts the
upstream values in place of their refs, calls the user's function and turns
the outcome into an ``AttemptResult`` (small, sent to the orchestrator) and
the value (left where the executor keeps values: Ray's object store, or
in-process memory).  The user's exception is kept as it was, with its
traceback text; it travels pickled, and only its description when it cannot.
The traceback text starts at the user's code: the engine's frames that called
it say nothing about the user's error.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from typing import Any

import cloudpickle

from rayflow.core.refs import NodeRef, substitute
from rayflow.engine.payload import load_payload
from rayflow.signals import Fail, Retry, Signal, Skip
from rayflow.states import ErrorInfo, StateType


@dataclass(frozen=True)
class AttemptResult:
    task_key: str
    attempt: int
    type: StateType  # SUCCESS, FAILED, or SKIPPED / RETRYING when the task raised a signal
    started_at: float
    finished_at: float
    message: str = ""
    error: ErrorInfo | None = None
    exception_bytes: bytes | None = None
    retryable: bool = True  # False when the exception is not one of the task's retry_on types
    retry_delay: float | None = None  # from rf.Retry(delay=...)
    length: int | None = None  # items in the value, when a map consumes it
    logs: tuple[tuple, ...] = ()  # records captured while it ran (engine.logs)

    def exception(self) -> BaseException | None:
        if self.exception_bytes is None:
            return None
        try:
            return cloudpickle.loads(self.exception_bytes)
        except Exception:  # the exception's class is not importable here
            return None


_RAYFLOW_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def describe_error(exc: BaseException, *, system: bool = False) -> ErrorInfo:
    """A system error keeps every frame: there the engine's own frames are the story."""
    cls = type(exc)
    return ErrorInfo(
        type=f"{cls.__module__}.{cls.__qualname__}",
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)) if system else format_user_traceback(exc),
        system=system,
    )


def format_user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` and of the exceptions chained to it, each from the user's first frame."""
    described = traceback.TracebackException.from_exception(exc)
    pending, seen = [described], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.stack = _drop_engine_frames(current.stack)
        pending.extend(t for t in (current.__cause__, current.__context__) if t is not None)
        pending.extend(getattr(current, "exceptions", None) or ())  # an ExceptionGroup's members
    return "".join(described.format())


def _drop_engine_frames(stack: traceback.StackSummary) -> traceback.StackSummary:
    """Without rayflow's frames above the user's first one; kept whole when all are rayflow's (its own error)."""
    for i, frame in enumerate(stack):
        if not os.path.abspath(frame.filename).startswith(_RAYFLOW_DIR):
            return traceback.StackSummary.from_list(stack[i:]) if i else stack
    return stack


def _pickled_exception(exc: BaseException) -> bytes | None:
    try:
        data = cloudpickle.dumps(exc)
        cloudpickle.loads(data)
        return data
    except Exception:
        return None


def run_attempt(payload: bytes, task_key: str, attempt: int, *inputs: Any) -> tuple[AttemptResult, Any]:
    """Run the task once; never raises for the user's errors or signals."""
    started = time.time()
    retry_on: tuple[type[BaseException], ...] = (Exception,)  # until the payload says otherwise
    try:
        fn, args, kwargs, upstream, retry_on = load_payload(payload)
        values = dict(zip(upstream, inputs, strict=True))

        def resolve(ref: Any) -> Any:
            return values[ref._key] if isinstance(ref, NodeRef) else ref

        value = fn(*substitute(args, resolve), **substitute(kwargs, resolve))
    except Signal as signal:
        return _signalled(signal, task_key, attempt, started), None
    except Exception as exc:
        error = describe_error(exc)
        return (
            AttemptResult(
                task_key=task_key,
                attempt=attempt,
                type=StateType.FAILED,
                started_at=started,
                finished_at=time.time(),
                message=str(error),
                error=error,
                exception_bytes=_pickled_exception(exc),
                retryable=isinstance(exc, retry_on),
            ),
            None,
        )
    return (
        AttemptResult(
            task_key=task_key,
            attempt=attempt,
            type=StateType.SUCCESS,
            started_at=started,
            finished_at=time.time(),
        ),
        value,
    )


_SIGNAL_STATES = {Skip: StateType.SKIPPED, Fail: StateType.FAILED, Retry: StateType.RETRYING}


def signal_message(signal: Signal) -> str:
    name = type(signal).__name__
    return f"{name} signal: {signal.message}" if signal.message else f"{name} signal"


def _signalled(signal: Signal, task_key: str, attempt: int, started: float) -> AttemptResult:
    kind = next((t for cls, t in _SIGNAL_STATES.items() if isinstance(signal, cls)), StateType.FAILED)
    message = signal_message(signal)
    return AttemptResult(
        task_key=task_key,
        attempt=attempt,
        type=kind,
        started_at=started,
        finished_at=time.time(),
        message=message,
        error=describe_error(signal) if kind is StateType.FAILED else None,
        exception_bytes=_pickled_exception(signal) if kind is StateType.FAILED else None,
        retryable=True,
        retry_delay=getattr(signal, "delay", None),
    )
