"""The item strategies that run a chunk's items on threads of their own (engine.worker.item_runners
picks them): ``run_abandoning``, items in order each on a helper thread (a timeout off the main
thread: the in-process runner's threads, where SIGALRM cannot reach), and ``run_threaded``, a
plain task's items on ``at_once`` threads (``concurrency=``).

Both keep item_runners' timeout contract: an item's timeout bounds each call of its function,
that is each iteration of its loop (``looping.ItemLoop.started`` moves at every next one), and
an item past it is TIMED_OUT, its thread abandoned (a thread cannot be stopped: it runs on until
its function returns, and its value is dropped), the state of the iteration it was in kept for
its retry.  Outcomes are recorded by the chunk's own thread.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures import wait as futures_wait
from typing import TYPE_CHECKING, Any

from rayflow.engine.worker.items import Outcomes
from rayflow.engine.worker.logs import current_context, running_item
from rayflow.engine.worker.looping import ItemLoop
from rayflow.signals import Signal

if TYPE_CHECKING:
    from rayflow.engine.worker.item_runners import ItemCalls


def run_abandoning(calls: ItemCalls) -> list[Any]:
    """Items one after another with a timeout, off the main thread (the in-process runner's
    threads), where SIGALRM cannot reach: each item runs on a helper thread this thread waits
    on.  An item past its timeout is marked TIMED_OUT and its thread abandoned, as the
    in-process runner abandons a plain task past its timeout; the next items run on a new
    helper.  The helpers are named after this thread (``<name>-item``), so whatever looks
    for this runner's lingering threads by name finds them too."""
    call, inputs, runnable, outcomes, timeout = calls.call, calls.inputs, calls.runnable, calls.outcomes, calls.timeout
    assert timeout is not None
    results: list[Any] = [None] * calls.size
    resume = calls.resume or {}
    context = current_context()

    def one(k: int, j: int, looping: ItemLoop) -> tuple[str, Any]:
        return _call_item(looping, call, inputs[k], context, j)

    k, n = 0, len(runnable)
    while k < n:
        pool = helpers(1)
        try:
            while k < n:
                j = runnable[k]
                looping = ItemLoop(calls.max_loops, resume.get(j))
                future = pool.submit(one, k, j, looping)
                k += 1
                outcome = _within(future, looping, timeout)
                if outcome is None:
                    outcomes.timed_out(j, timeout)
                    outcomes.stopped(j, looping.state())
                    break  # its helper is abandoned: the next items get a new one
                _record_item(results, outcomes, j, looping, *outcome)
        finally:
            pool.shutdown(wait=False)
    return results


def _within(future: Future[tuple[str, Any]], looping: ItemLoop, timeout: float) -> tuple[str, Any] | None:
    """The item's outcome, or None once an iteration of it ran past ``timeout``: each next
    iteration's start moves the deadline."""
    while True:
        begun = looping.started
        left = timeout if begun is None else begun + timeout - time.monotonic()
        try:
            return future.result(timeout=max(left, 0.0))
        except FuturesTimeout:  # only the wait's: the call's own TimeoutError comes back as a value
            if looping.started is None or time.monotonic() - looping.started >= timeout:
                return None


def helpers(n: int) -> ThreadPoolExecutor:
    """Helper threads named after this one: the in-process runner's lingering threads are found by name."""
    return ThreadPoolExecutor(n, thread_name_prefix=f"{threading.current_thread().name}-item")


def run_threaded(calls: ItemCalls) -> list[Any]:
    """A plain task's items on ``at_once`` threads.  An item whose iteration runs past its
    timeout is marked TIMED_OUT and its thread abandoned; its slot is given back: the next
    items run on new threads, as ``run_abandoning`` goes on with a new helper, so a stuck call
    holds up no other item.  Without a timeout every item is handed to the pool at once."""
    call, inputs, outcomes, timeout = calls.call, calls.inputs, calls.outcomes, calls.timeout
    at_once = calls.at_once or 1
    results: list[Any] = [None] * calls.size
    resume = calls.resume or {}
    context = current_context()
    loops: dict[int, ItemLoop] = {}  # item -> its loop (when its iteration started: its deadline)

    def one(k: int, j: int) -> tuple[str, Any]:
        return _call_item(loops[j], call, inputs[k], context, j)

    def threads() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(at_once, thread_name_prefix="rayflow-item")

    pools = [threads()]
    waiting = collections.deque(enumerate(calls.runnable))
    running: dict[Future[tuple[str, Any]], int] = {}
    try:
        while waiting or running:
            while waiting and (timeout is None or len(running) < at_once):  # each item starts when handed over
                k, j = waiting.popleft()
                loops[j] = ItemLoop(calls.max_loops, resume.get(j))
                running[pools[-1].submit(one, k, j)] = j
            done, _ = futures_wait(running, timeout=None if timeout is None else 0.05, return_when=FIRST_COMPLETED)
            for future in done:
                j = running.pop(future)
                _record_item(results, outcomes, j, loops.pop(j), *future.result())
            if timeout is not None:
                now = time.monotonic()
                late = [f for f, j in running.items() if (t := loops[j].started) is not None and now - t > timeout]
                for future in late:
                    j = running.pop(future)
                    outcomes.timed_out(j, timeout)
                    outcomes.stopped(j, loops.pop(j).state())
                if late and waiting:  # the abandoned threads keep theirs: the next items get new ones
                    pools[-1].shutdown(wait=False)
                    pools.append(threads())
    finally:
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
    return results


def _call_item(looping: ItemLoop, call: Any, item: Any, context: Any, j: int) -> tuple[str, Any]:
    """Item ``j`` (its loop too) on a helper thread: ("ok", value), ("signal", sig) or ("error", exc)."""
    running_item(context, j)
    try:
        return "ok", looping.run(call, item)
    except Signal as sig:
        return "signal", sig
    except Exception as exc:
        return "error", exc


def _record_item(results: list[Any], outcomes: Outcomes, j: int, looping: ItemLoop, kind: str, value: Any) -> None:
    """What ``_call_item`` returned, kept: item ``j``'s value, or its signal or failure (and
    where its loop stopped, for its retry)."""
    if kind == "ok":
        results[j] = value
        return
    if kind == "signal":
        outcomes.signalled(value, j)
    else:
        outcomes.failed((j,), value)
    outcomes.stopped(j, looping.state())
