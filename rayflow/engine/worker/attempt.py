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

import asyncio
import dataclasses
import inspect

import time
from typing import Any

import cloudpickle

from rayflow.core.refs import NodeRef, substitute
from rayflow.engine.payload import load_payload
from rayflow.engine.protocol import AttemptResult, describe_error, signal_outcome
from rayflow.engine.worker.blocking import BlockWatch, warn_blocked
from rayflow.engine.worker.results import MISS, keep, look_up, to_persist
from rayflow.engine.worker.looping import Iterations, LoopLimitExceeded, resumed
from rayflow.signals import Loop, Pause, Signal
from rayflow.states import StateType


def _pickled_exception(exc: BaseException) -> bytes | None:
    try:
        data = cloudpickle.dumps(exc)
        cloudpickle.loads(data)
        return data
    except Exception:
        return None


def run_attempt(
    payload: bytes, task_key: str, attempt: int, *inputs: Any, run_id: str = "", max_loops: int = 1000,
    looped: bytes | None = None, started: Any = None,
) -> tuple[AttemptResult, Any]:
    """Run the task once (with every iteration of its loop, if it raises ``rf.Loop``: from where
    ``looped`` says, for a retry; ``started(at)`` is told when each next one starts: a task's
    timeout bounds each iteration); never raises for the user's errors or signals.

    With a result policy in the payload (``engine.worker.results``), a cache hit is the
    value without running the function (CACHED), and a success is written to the store.
    """
    loop = Iterations(max_loops, *resumed(looped), started=started)
    token = loop.enter()
    try:
        report, value = _run(payload, task_key, attempt, inputs, run_id, loop)
    finally:
        loop.exit(token)
    if loop.count > 1:  # it looped (now or in the attempts before): the iterations, and where a retry resumes
        ended = report.type in (StateType.SUCCESS, StateType.CACHED, StateType.SKIPPED)
        report = dataclasses.replace(report, loops=tuple(loop.looped), loop_state=None if ended else loop.state())
        if report.type is StateType.SUCCESS and not report.message:  # `rayflow show`'s note says so
            report = dataclasses.replace(report, message=f"{loop.count} iterations")
    return report, value


def _run(payload: bytes, task_key: str, attempt: int, inputs: Any, run_id: str, loop: Iterations) -> tuple[AttemptResult, Any]:
    started = time.time()
    retry_on: tuple[type[BaseException], ...] = (Exception,)  # until the payload says otherwise
    kept = None
    try:
        fn, args, kwargs, upstream, retry_on, policy = load_payload(payload)
        values = dict(zip(upstream, inputs, strict=True))

        def resolve(ref: Any) -> Any:
            return values[ref._key] if isinstance(ref, NodeRef) else ref

        call_args, call_kwargs = substitute(args, resolve), substitute(kwargs, resolve)
        lookup = look_up(policy, task_key, fn, call_args, call_kwargs) if policy is not None else None
        if lookup is not None and lookup.value is not MISS:
            resumed = lookup.path == policy.load_from  # a cache hit is this run's result too: persisted
            return (
                AttemptResult(
                    task_key=task_key,
                    attempt=attempt,
                    type=StateType.CACHED,
                    started_at=started,
                    finished_at=time.time(),
                    message=f"{'resumed from' if resumed else 'cache hit:'} {lookup.path}",
                    result_path=lookup.path,
                    persist=None if resumed else to_persist(policy, run_id, task_key),
                ),
                lookup.value,
            )
        while True:
            try:
                value = _call(task_key, fn, call_args, call_kwargs)
                break
            except Loop as signal:  # the next iteration, at once (LoopLimitExceeded past max_loops)
                loop.next(signal)
        if policy is not None:
            kept = keep(policy, task_key, lookup, value)
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
                retryable=isinstance(exc, retry_on) and not isinstance(exc, LoopLimitExceeded),
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
            message=lookup.reason if lookup is not None else "",
            result_path=kept,
            persist=to_persist(policy, run_id, task_key),
        ),
        value,
    )


def _call(task_key: str, fn: Any, args: Any, kwargs: Any) -> Any:
    value = fn(*args, **kwargs)
    if inspect.iscoroutine(value):  # an async task: its own event loop, in this worker thread
        watch = BlockWatch(task_key)
        try:
            value = asyncio.run(watch.timed(value))
        finally:
            warn_blocked(watch)
    return value


def _signalled(signal: Signal, task_key: str, attempt: int, started: float) -> AttemptResult:
    outcome = signal_outcome(signal)
    failed = outcome.type is StateType.FAILED
    return AttemptResult(
        task_key=task_key,
        attempt=attempt,
        type=outcome.type,
        started_at=started,
        finished_at=time.time(),
        message=outcome.message,
        error=describe_error(signal) if failed else None,
        exception_bytes=_pickled_exception(signal) if failed else None,
        retryable=outcome.retryable,
        retry_delay=outcome.delay,
        pause=(signal.schema, signal.timeout) if isinstance(signal, Pause) else None,
    )
