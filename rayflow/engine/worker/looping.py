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
follows the same rules (``ItemLoop``): it loops from its strategy's ``except Loop``, so items
that never loop pay nothing; each iteration of an item is a log record of the run under its map
index; an item that fails (or times out) after looping leaves where it stopped in its chunk's
outcomes, the map holds it and the work that runs the item again resumes it there
(``ChunkSummary.loops`` to ``ChunkJob.looped``: engine.maps).  ``max_loops`` counts a task's
(or item's) iterations across its retries: past it the task (or item) ends FAILED with
``LoopLimitExceeded``, not retried.

Timeouts: a task's ``timeout`` bounds each iteration.  A plain task's worker tells the
orchestrator when each next one starts (``started``, the executor's start notice), which moves
the attempt's deadline; an attempt that times out reports nothing, so its retry resumes where
the attempt before it stopped (or at the first iteration).  An item's strategy reads
``ItemLoop.started``, which each next iteration moves (engine.worker.item_runners); an item that
times out keeps the state of the iteration it was in, and its retry resumes there.

``rf.context()`` reads the contextvars of the work running in this thread or asyncio task
(engine.worker.logs) and of its loop (``_LOOP``).
"""

from __future__ import annotations

import contextvars
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


class ItemLoop:
    """One item's loop as the strategy running it sees it: the iteration it starts at (``resume``,
    a retry's pickled (loop_count, loop_result); None: the first), its ``Iterations`` once it
    loops, and when its current iteration started (``started``, monotonic; None until it runs):
    an item's timeout counts from there, so each next iteration moves its deadline, and
    ``on_start()`` is told (SIGALRM re-armed).  Made per item only where items are timed, or
    for an item that loops or resumes: items that never loop pay nothing elsewhere."""

    __slots__ = ("max_loops", "resume", "loop", "started", "on_start")

    def __init__(self, max_loops: int, resume: bytes | None = None, on_start: Any = None):
        self.max_loops = max_loops
        self.resume = resume
        self.loop: Iterations | None = None
        self.started: float | None = None
        self.on_start = on_start

    def run(self, call: Any, item: Any) -> Any:
        """``call(item)`` with the rest of its loop (from ``resume``): its value; raises what it raised."""
        self.started = time.monotonic()
        if self.resume is not None:
            return _iterate(call, item, None, self._begin())
        try:
            return call(item)
        except Loop as first:
            return self.after(call, item, first)

    def after(self, call: Any, item: Any, first: Loop) -> Any:
        """The item's first iteration raised ``first``: the rest of its loop."""
        return _iterate(call, item, first, self._begin())

    async def run_async(self, call: Any, item: Any, first: Loop | None = None) -> Any:
        """An async task's item from ``resume``, or after its first iteration raised ``first``
        (its first call is the strategy's own: engine.worker.item_runners.run_async); each
        iteration's coroutine awaited on its loop."""
        self.started = time.monotonic()
        loop = self._begin()
        token = loop.enter()
        try:
            while True:
                if first is not None:
                    loop.next(first)
                try:
                    return await call(item)
                except Loop as again:
                    first = again
        finally:
            loop.exit(token)

    def state(self) -> bytes | None:
        """Where the item stopped (it failed, or timed out in the iteration running), for its
        retry; None when it did not loop (its retry starts at the first iteration)."""
        return self.loop.state() if self.loop is not None else None

    def _begin(self) -> Iterations:
        count, result = resumed(self.resume)
        self.loop = Iterations(self.max_loops, count, result, keep=False, started=self._next)
        return self.loop

    def _next(self, _at: float) -> None:
        self.started = time.monotonic()
        if self.on_start is not None:
            self.on_start()


def _iterate(call: Any, item: Any, first: Loop | None, loop: Iterations) -> Any:
    """The item's iterations from ``loop``'s (after ``first``, the rf.Loop its first raised)
    until one returns (its value) or raises (what it raised; LoopLimitExceeded past max_loops)."""
    token = loop.enter()
    try:
        while True:
            if first is not None:
                loop.next(first)
            try:
                return call(item)
            except Loop as again:
                first = again
    finally:
        loop.exit(token)

