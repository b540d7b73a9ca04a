"""One attempt of one task, inside whatever process runs it.

``run_attempt`` is what a worker executes: it unpickles the payload, puts the
upstream values in place of their refs, calls the user's function and turns
the outcome into an ``AttemptResult`` (small, sent to the orchestrator) and
the value (left where the executor keeps values: Ray's object store, or
in-process memory).  The user's exception is kept as it was, with its
traceback text; it travels pickled, and only its description when it cannot.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

import cloudpickle

from rayflow.core.refs import NodeRef, substitute
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


def describe_error(exc: BaseException, *, system: bool = False) -> ErrorInfo:
    cls = type(exc)
    return ErrorInfo(
        type=f"{cls.__module__}.{cls.__qualname__}",
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        system=system,
    )


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
        fn, args, kwargs, upstream, retry_on = cloudpickle.loads(payload)
        values = dict(zip(upstream, inputs, strict=True))

        def resolve(ref: Any) -> Any:
            return values[ref.key] if isinstance(ref, NodeRef) else ref

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
