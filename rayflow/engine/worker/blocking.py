"""An ``async def`` task that blocks its event loop (``time.sleep``, a blocking client, a long
computation between two ``await``s) holds every other item of its chunk back, with no error:
the map just runs several times slower.  This finds it and says so in the task's logs.

Each item's coroutine runs inside ``BlockWatch.timed``, which times every *step* of it (from
the loop resuming it to its next yield back to the loop), as asyncio's debug mode does for its
slow-callback warning (``slow_callback_duration``, 0.1 s), without debug mode's cost (a stack
captured for every future and handle).  The cost on the normal path is two clock readings
per step.  The watch keeps the count of items that blocked and the longest step; the chunk
(or the plain task's attempt) adds one WARNING record when it ends, never one per item.

Not seen: steps of tasks an item starts itself (``asyncio.gather`` of its own coroutines,
``create_task``), which the loop steps on their own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

from rayflow.engine.worker.logs import current_context

SLOW_STEP_SECONDS = 0.1  # asyncio's slow_callback_duration


class BlockWatch:
    """The steps of one work's coroutines that held their loop ``SLOW_STEP_SECONDS`` or more."""

    def __init__(self, task_key: str, threshold: float = SLOW_STEP_SECONDS):
        self.task_key = task_key
        self.threshold = threshold
        self.items: set[int | None] = set()  # items (chunk positions; None: a plain task) that blocked
        self.longest = 0.0
        self.longest_item: int | None = None

    def timed(self, coro: Awaitable[Any], item: int | None = None) -> Awaitable[Any]:
        """``coro`` with its steps timed (an awaitable that is not a coroutine is left as it is)."""
        if not isinstance(coro, Coroutine):
            return coro
        return _timed(_Steps(coro, self, item))

    def blocked(self, item: int | None, seconds: float) -> None:
        self.items.add(item)
        if seconds > self.longest:
            self.longest, self.longest_item = seconds, item

    def message(self, size: int | None = None, index: int | None = None) -> str | None:
        """The warning for the logs (None: nothing blocked); ``size``: the chunk's items,
        ``index``: the map index of the item that blocked longest."""
        if not self.items:
            return None
        where = "" if index is None else f"item {index} "
        text = (
            f"async task {self.task_key!r} blocked its event loop: {where}held it for {self.longest:.3f} s "
            f"without an await"
        )
        if size is not None:
            text += f" ({len(self.items)} of this chunk's {size} items blocked it for {self.threshold:g} s or more)"
        return text + (
            "; the loop runs nothing else meanwhile, so other items wait. Await an async call instead, or run "
            "the blocking one with `await asyncio.to_thread(...)` (or make the task a plain def with concurrency=)"
        )


def warn_blocked(watch: BlockWatch, size: int | None = None) -> None:
    """One WARNING in the running work's logs, naming the item that blocked longest, if any did."""
    context = current_context()
    if not watch.items or context is None:
        return
    item = watch.longest_item
    index = item if context.map_start is None else context.index_of(item)
    context.add("WARNING", watch.message(size, index), item=item)


async def _timed(steps: _Steps) -> Any:
    return await steps


class _Steps:
    """Awaitable driving ``coro`` step by step, as ``await coro`` would, timing each step."""

    __slots__ = ("coro", "watch", "item")

    def __init__(self, coro: Coroutine[Any, Any, Any], watch: BlockWatch, item: int | None):
        self.coro, self.watch, self.item = coro, watch, item

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, watch, threshold, clock = self.coro, self.watch, self.watch.threshold, time.perf_counter
        sent: Any = None
        error: BaseException | None = None
        while True:
            done = False
            start = clock()
            try:
                yielded = coro.send(sent) if error is None else coro.throw(error)
            except StopIteration as stop:
                done, value = True, stop.value
            finally:
                took = clock() - start
                if took >= threshold:
                    watch.blocked(self.item, took)
            if done:
                return value
            try:
                sent, error = (yield yielded), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - a cancellation, thrown on into the coroutine
                sent, error = None, exc
