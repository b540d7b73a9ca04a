"""The event loops a chunk's async calls run on, with a bounded end: a call cancelled at its
timeout gets ``CANCEL_GRACE`` seconds to unwind (its ``finally`` blocks run); one that
swallows the cancellation and goes on is abandoned with its loop, on a daemon thread, as a
helper thread whose call is past its timeout is (worker.item_runners' timeout contract), so
a chunk never waits for a coroutine that will not end."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

CANCEL_GRACE = 2.0  # seconds a cancelled call has to unwind before it is abandoned


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, except that tasks still running when ``main`` ends (abandoned
    calls) are cancelled and waited for at most ``CANCEL_GRACE`` seconds, then left running on
    their loop in a daemon thread (``asyncio.run`` would wait for them for ever)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        _end(loop)


async def cancel_within(task: asyncio.Future[Any], grace: float | None = None) -> bool:
    """Cancel ``task`` and give it ``grace`` seconds to unwind (CANCEL_GRACE, read at the call: a
    test sets it shorter); False if it is still running (it swallowed the cancellation:
    ``run_loop`` abandons it when its loop's work is done)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE if grace is None else grace)
    return bool(done)


def _end(loop: asyncio.AbstractEventLoop) -> None:
    left = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in left:
        task.cancel()
    if left:
        loop.run_until_complete(asyncio.wait(left, timeout=CANCEL_GRACE))
        left = [t for t in left if not t.done()]
    if left:  # they will not end: their loop runs on, abandoned, until they do or the process exits
        still = asyncio.gather(*left, return_exceptions=True)
        threading.Thread(target=loop.run_until_complete, args=(still,), name="rayflow-abandoned-loop", daemon=True).start()
        return
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
