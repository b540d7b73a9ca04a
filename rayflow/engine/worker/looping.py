"""Looping tasks (``raise rf.Loop(result=..., message=...)``) and ``rf.context()``, inside a worker.

The loop runs where the task runs: an iteration that raises ``rf.Loop`` is followed at once by
the next one, in the same worker and the same attempt (no round trip to the orchestrator, one
Ray task for the whole loop).  ``Iterations`` is the loop state of one task attempt or one item
of a map: the iteration running (``loop_count``, 1 on the first run), the value the last
``rf.Loop`` gave (``loop_result``) and, for a plain task, each iteration that looped
(its start, end and message), which the attempt's report carries back: the orchestrator
records one LOOPED state per iteration before the attempt's outcome (engine.retries.loops).

A plain task's attempt that fails after looping reports where it stopped (``loop_state``): its
retry resumes at that iteration with that ``loop_result`` (Prefect 1's rule: a retry keeps the
loop's count and result, and a loop resets nothing of the retry budget).  An item of a map
loops from its strategy's ``except Signal`` (``loop_item``): items that never loop pay nothing;
each iteration of an item is a log record of the run under its map index; an item that fails
mid-loop is retried from its first iteration.  Past ``max_loops`` iterations the task (or item)
ends FAILED with ``LoopLimitExceeded``, not retried.

Timeouts: a plain task's ``timeout`` bounds each iteration: the worker tells the orchestrator
when each next one starts (``started``, the executor's start notice), which moves the attempt's
deadline.  An attempt that times out reports nothing, so its retry resumes where the attempt
before it stopped (or at the first iteration).  An item of a map is timed whole: its timeout
bounds all its iterations together (the item strategies time a call, and an item's loop runs
within its call: engine.worker.item_runners).

``rf.context()`` reads the contextvars of the work running in this thread or asyncio task
(engine.worker.logs) and of its loop (``_LOOP``).
"""

from __future__ import annotations

import contextvars
import inspect
import time
from dataclasses import dataclass
from typing import Any

import cloudpickle

from rayflow.engine.worker.logs import current_context, get_run_logger
from rayflow.signals import Loop

# (loop_count, loop_result) of the iteration running in this thread or asyncio task (None: the first run)
_LOOP: contextvars.ContextVar[tuple[int, Any] | None] = contextvars.ContextVar("rayflow_loop", default=None)


class LoopLimitExceeded(RuntimeError):
    """A task (or item) raised ``rf.Loop`` in its ``max_loops``-th iteration; never retried."""


@dataclass(frozen=True)
class TaskContext:
    """What ``rf.context()`` tells the code of a task about the work it runs in."""

    run_id: str | None  # None outside a task
    task_key: str | None
    map_index: int | None  # the item's index, in a mapped task
    loop_count: int  # the iteration running: 1 on the first run, +1 after each rf.Loop
    loop_result: Any  # the ``result`` of the last rf.Loop (None on the first run)


def context() -> TaskContext:
    """The running task's context: run id, task key, map index and, for a looping task, the
    iteration (``loop_count``) and the value the last ``rf.Loop`` gave (``loop_result``)."""
    work = current_context()
    count, result = _LOOP.get() or (1, None)
    if work is None:
        return TaskContext(None, None, None, count, result)
    return TaskContext(work.run_id, work.task_key, work.map_index(), count, result)


class Iterations:
    """The loop state of one attempt or item: ``count`` runs now; ``looped`` holds (start, end,
    message) of each iteration that raised rf.Loop (kept for a plain task's report only)."""

    def __init__(self, max_loops: int, count: int = 1, result: Any = None, *, keep: bool = True, started: Any = None):
        self.max_loops = max_loops
        self.on_start = started  # told each next iteration's start (a timed plain task: its deadline moves)
        self.count = count
        self.result = result
        self.started = time.time()
        self.looped: list[tuple[float, float, str]] = []
        self.keep = keep

    def enter(self) -> contextvars.Token:
        return _LOOP.set((self.count, self.result) if self.count > 1 else None)

    def exit(self, token: contextvars.Token) -> None:
        _LOOP.reset(token)

    def next(self, loop: Loop) -> None:
        """Iteration ``count`` raised ``loop``: the next one is set up, or LoopLimitExceeded."""
        if self.count >= self.max_loops:
            raise LoopLimitExceeded(f"iteration {self.count} raised rf.Loop: max_loops={self.max_loops} reached")
        now = time.time()
        message = loop.message or f"loop {self.count}"
        if self.keep:
            self.looped.append((self.started, now, message))
        else:
            get_run_logger().info("LOOPED (iteration %d): %s", self.count, message)
        self.count, self.result, self.started = self.count + 1, loop.result, now
        _LOOP.set((self.count, self.result))
        if self.on_start is not None:
            self.on_start(now)

    def state(self) -> bytes | None:
        """Where a failed attempt stopped, for its retry (None: at the first iteration)."""
        if self.count <= 1:
            return None
        try:
            return cloudpickle.dumps((self.count, self.result))
        except Exception:  # noqa: BLE001 - a result that cannot travel: the retry starts over
            return None


def resumed(state: bytes | None) -> tuple[int, Any]:
    """(loop_count, loop_result) a retry starts at."""
    return cloudpickle.loads(state) if state is not None else (1, None)


def loop_item(call: Any, item: Any, first: Loop, max_loops: int) -> Any:
    """An item of a map raised ``first`` (rf.Loop) in its first iteration: run it again until it
    returns (its value) or raises (what it raised; LoopLimitExceeded past ``max_loops``)."""
    loop = Iterations(max_loops, keep=False)
    token = loop.enter()
    try:
        signal = first
        while True:
            loop.next(signal)
            try:
                return call(item)
            except Loop as again:
                signal = again
    finally:
        _LOOP.reset(token)


async def loop_item_async(call: Any, item: Any, first: Loop, max_loops: int) -> Any:
    """``loop_item`` for an async task's item: each iteration's coroutine awaited on its loop."""
    loop = Iterations(max_loops, keep=False)
    token = loop.enter()
    try:
        signal = first
        while True:
            loop.next(signal)
            try:
                value = call(item)
                return await value if inspect.isawaitable(value) else value
            except Loop as again:
                signal = again
    finally:
        _LOOP.reset(token)


def call_looping(call: Any, item: Any, max_loops: int) -> Any:
    """``call(item)`` with its loop, if it raises rf.Loop (where a strategy times or runs an item whole)."""
    try:
        return call(item)
    except Loop as first:
        return loop_item(call, item, first, max_loops)
