"""How a chunk's items run: one interface, six strategies, one timeout contract.

Every per-item strategy takes an ``ItemCalls`` (the call, each runnable item's input, the
chunk's ``Outcomes``, the timeout, how many items may run at once) and returns one value per
selected item, None where an item did not run or did not succeed; ``pick`` chooses it:

- ``run_dense``: every item, in order, at the speed of a list comprehension (no timeout), or
  its first items up to a time budget (``ItemCalls.budget``: the map has the rest);
- ``run_items``: some items (the others gated, or a retry), in order (no timeout);
- ``run_timed``: items in order, each under SIGALRM (a timeout, on the process's main thread:
  a Ray worker);
- ``run_abandoning``: items in order, each on a helper thread (a timeout, off the main thread:
  the in-process runner's threads, where SIGALRM cannot reach; in ``item_threads``);
- ``run_async``: an async task's items on one event loop, ``at_once`` at a time;
- ``run_threaded``: a plain task's items on ``at_once`` threads (``concurrency=``), a thread
  whose item was abandoned replaced by a new one (in ``item_threads``);

and ``run_batch`` makes the one call of a ``batch=True`` chunk with whole columns.

The timeout contract, the same for every strategy on both runners: a task's ``timeout``
bounds each call of its function, counted from the call's start (not from the chunk's): an
item's call, each iteration of an item that loops (``looping.ItemLoop``: every next iteration
moves the item's deadline), or for ``batch=True`` the chunk's one call.  A call still running at its deadline
is stopped where Python can stop it (SIGALRM raises in it on a main thread; an async item is
cancelled, its ``finally`` blocks run, within ``loops.CANCEL_GRACE`` seconds) and abandoned where it
cannot (a helper thread runs on until the function returns, its value dropped; a coroutine that
swallows its cancellation runs on with its loop on a daemon thread).  Each item the call was given ends
TIMED_OUT ("item timed out after <timeout>s"), retried while the task's retries last, and
the chunk's other items go on.

Loops: an item that raises ``rf.Loop`` runs its iterations where it runs (``looping.ItemLoop``);
one that fails or times out after looping leaves where it stopped in ``outcomes.stopped`` (its
retry, ``resume``, starts there: the chunk's summary and the map carry it).  SIGALRM and a thread cannot interrupt a call stuck in C code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any

import numpy as np

from rayflow.core.refs import MapInput, substitute
from rayflow.engine.columns import Column, encode_values, to_column
from rayflow.engine.worker.blocking import BlockWatch, warn_blocked
from rayflow.engine.worker.item_threads import helpers, run_abandoning, run_threaded
from rayflow.engine.worker.items import Outcomes
from rayflow.engine.worker.logs import current_context, running_item
from rayflow.engine.worker.looping import ItemLoop
from rayflow.engine.worker.loops import cancel_within, run_loop
from rayflow.signals import Loop, Signal


@dataclasses.dataclass(eq=False)
class ItemCalls:
    """What a per-item strategy runs: ``call(inputs[k])`` for the k-th runnable item, its value
    kept at position ``runnable[k]`` of the ``size`` values returned; each item's failure,
    signal or timeout goes to ``outcomes``.  ``cell`` receives the index of the item running
    (for the map index of log records); ``at_once`` is how many items may run at once (None:
    one after another); ``map_key`` names the map in an async task's blocked-loop warning."""

    call: Callable[[Any], Any]
    inputs: Sequence[Any]
    runnable: Sequence[int]
    size: int
    outcomes: Outcomes
    timeout: float | None = None
    cell: list[Any] | None = None
    at_once: int | None = None
    is_async: bool = False
    map_key: str = ""
    max_loops: int = 1000  # iterations an item may run (rf.Loop: engine.worker.looping)
    resume: Mapping[int, bytes] | None = None  # a retry: item -> the iteration it resumes at (ItemLoop.resume)
    budget: float = 0.0  # seconds after which run_dense may stop, its first items done (ChunkJob.budget)


ItemRunner = Callable[[ItemCalls], list[Any]]


def pick(calls: ItemCalls) -> ItemRunner:
    """The strategy for these calls: by the task (async, concurrency), its timeout and the thread."""
    if calls.is_async:
        return run_async
    if calls.at_once is not None:
        return run_threaded
    if calls.timeout is not None:
        return run_timed if _on_main_thread() else run_abandoning
    if len(calls.runnable) == calls.size and not calls.resume:  # every item runs: runnable is 0..n-1, item k is input k
        return run_dense
    return run_items


def _on_main_thread() -> bool:
    """SIGALRM reaches the main thread only (a Ray worker runs its tasks there)."""
    return threading.current_thread() is threading.main_thread()


def run_dense(calls: ItemCalls) -> list[Any]:
    """Every item runs, in order, at the speed of a list comprehension: ``map`` calls in C and
    ``list.extend`` appends each result as it comes, so when an item raises, the results before
    it are kept, the item's index is ``len(done)``, and the same iterator resumes after it.
    The item running is always the next one to be appended: log records read ``len(done)``.
    """
    call, outcomes = calls.call, calls.outcomes
    done: list[Any] = []
    if calls.cell is not None:
        calls.cell[0] = done.__len__
    remaining = iter(calls.inputs)
    blocks = _blocks(calls.budget, done) if calls.budget else None
    while True:
        try:
            if blocks is None:
                done.extend(map(call, remaining))
                return done
            for block in blocks:  # a budgeted chunk: in blocks, until its items or its budget run out
                before = len(done)
                done.extend(map(call, itertools.islice(remaining, block)))
                if len(done) - before < block:
                    return done
            return done  # its budget is spent: the rest of its items are the map's (ChunkJob.budget)
        except Loop as sig:  # the item loops: its iterations, then on with the next items
            done.append(_looped(calls, calls.inputs[len(done)], len(done), sig))
            continue
        except Signal as sig:
            outcomes.signalled(sig, len(done))
        except Exception as exc:
            outcomes.failed((len(done),), exc)
        done.append(None)


def _blocks(budget: float, done: list[Any]) -> Any:
    """Sizes of the next blocks of a chunk that may stop after ``budget`` seconds: each as many
    items as the time left holds at the time per item so far (growing at most fourfold); it ends
    once the budget is spent.  One item first: a map of slow items is stopped near its budget."""
    start = time.perf_counter()
    stop_at, block = start + budget, 1
    while True:
        yield block
        now = time.perf_counter()
        if now >= stop_at:
            return
        per_item = max((now - start) / max(1, len(done)), 1e-9)
        block = max(1, min(int((stop_at - now) / per_item), 4 * len(done)))


def run_items(calls: ItemCalls) -> list[Any]:
    """Some items run (the others were gated, or this is a retry): ``results[runnable[k]]`` is
    ``call(inputs[k])``, or the rest of its loop from where ``resume`` says; nothing runs twice."""
    call, inputs, runnable, outcomes, resume = calls.call, calls.inputs, calls.runnable, calls.outcomes, calls.resume
    results: list[Any] = [None] * calls.size
    cell = calls.cell if calls.cell is not None else [None]
    n = len(runnable)
    k = 0
    while k < n:
        try:
            while k < n:
                cell[0] = j = runnable[k]
                if resume and j in resume:  # a retry of an item that stopped mid-loop
                    results[j] = _looped(calls, inputs[k], j, None, resume[j])
                else:
                    results[j] = call(inputs[k])
                k += 1
        except Loop as sig:
            results[runnable[k]] = _looped(calls, inputs[k], runnable[k], sig)
            k += 1
        except Signal as sig:
            outcomes.signalled(sig, runnable[k])
            k += 1
        except Exception as exc:
            outcomes.failed((runnable[k],), exc)
            k += 1
    return results


def _looped(calls: ItemCalls, item: Any, j: int, first: Loop | None, resume: bytes | None = None) -> Any:
    """Item ``j`` raised ``first`` (rf.Loop), or resumes its loop (``resume``): its loop run to its
    value, or its outcome and where it stopped kept (None)."""
    looping = ItemLoop(calls.max_loops, resume)
    try:
        return looping.after(calls.call, item, first) if first is not None else looping.run(calls.call, item)
    except Signal as sig:
        calls.outcomes.signalled(sig, j)
    except Exception as exc:
        calls.outcomes.failed((j,), exc)
    calls.outcomes.stopped(j, looping.state())
    return None


class _ItemTimeout(BaseException):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _ItemTimeout()


def run_timed(calls: ItemCalls) -> list[Any]:
    """Items in order on the main thread, each iteration interrupted by SIGALRM at its deadline
    (re-armed when an item's next iteration starts)."""
    call, inputs, outcomes, timeout = calls.call, calls.inputs, calls.outcomes, calls.timeout
    assert timeout is not None
    results: list[Any] = [None] * calls.size
    cell = calls.cell if calls.cell is not None else [None]
    resume = calls.resume or {}

    def rearm() -> None:
        signal.setitimer(signal.ITIMER_REAL, timeout)

    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for k, j in enumerate(calls.runnable):
            cell[0] = j
            looping = ItemLoop(calls.max_loops, resume.get(j), rearm)
            try:
                rearm()
                try:
                    results[j] = looping.run(call, inputs[k])
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                continue
            except _ItemTimeout:
                outcomes.timed_out(j, timeout)
            except Signal as sig:
                outcomes.signalled(sig, j)
            except Exception as exc:
                outcomes.failed((j,), exc)
            outcomes.stopped(j, looping.state())
    finally:
        signal.signal(signal.SIGALRM, previous)
    return results


def run_async(calls: ItemCalls) -> list[Any]:
    """An async task's items on one event loop, at most ``at_once`` at a time; each item's
    timeout, failure and signal are its own; a step that blocks the loop is reported once per chunk."""
    results: list[Any] = [None] * calls.size
    watch = BlockWatch(calls.map_key)
    run_loop(_items_on_loop(calls, results, watch))
    warn_blocked(watch, len(calls.runnable))
    return results


async def _items_on_loop(calls: ItemCalls, results: list[Any], watch: BlockWatch) -> None:
    """Outcomes are recorded by this loop's thread; ``watch`` times each item's steps."""
    call, inputs, outcomes, timeout = calls.call, calls.inputs, calls.outcomes, calls.timeout
    resume = calls.resume or {}
    slots = asyncio.Semaphore(calls.at_once or 1)
    context = current_context()

    async def one(k: int, j: int) -> None:
        async with slots:
            running_item(context, j)  # this asyncio task's context: log records name item j
            looping = ItemLoop(calls.max_loops, resume.get(j))
            looping.started = time.monotonic()
            step = call(inputs[k]) if looping.resume is None else looping.run_async(call, inputs[k])
            while True:  # once, or again with the rest of its loop when it raised rf.Loop
                task = asyncio.ensure_future(watch.timed(step, j))
                while True:  # until it ends, or an iteration of it runs past its deadline
                    left = None if timeout is None else max(0.0, looping.started + timeout - time.monotonic())
                    done, _ = await asyncio.wait({task}, timeout=left)
                    if done:
                        break
                    if time.monotonic() - looping.started < timeout:  # a next iteration began: its own deadline
                        continue
                    await cancel_within(task)  # it unwinds its own `finally`s, or is abandoned
                    outcomes.timed_out(j, timeout)  # type: ignore[arg-type]
                    outcomes.stopped(j, looping.state())
                    return
                try:
                    results[j] = task.result()
                    return
                except Loop as sig:
                    step = looping.run_async(call, inputs[k], sig)
                    continue
                except Signal as sig:
                    outcomes.signalled(sig, j)
                except Exception as exc:
                    outcomes.failed((j,), exc)
                outcomes.stopped(j, looping.state())
                return

    await asyncio.gather(*(one(k, j) for k, j in enumerate(calls.runnable)))


def run_batch(fn, args, kwargs, sources, selected, runnable, outcomes: Outcomes, timeout: float | None = None) -> Column | list[Any]:
    """batch=True: one call with whole columns; an exception fails every item it was given, and
    a call past ``timeout`` (the contract above) times every item it was given out.

    Returns the function's output as the chunk's column when every item ran (zero-copy path),
    else the per-item values (None where an item did not run).
    """
    results: list[Any] = [None] * len(selected)
    if not runnable:
        return results
    n_items = len(sources[0][0])
    if len(runnable) == len(selected) == n_items and selected[-1] == n_items - 1:
        take, full = None, True  # every item of the sources, in order: no index array to build
    else:
        take = np.array([selected[j] for j in runnable], dtype=np.int64)
        full = len(take) == n_items and np.array_equal(take, np.arange(len(take)))
    batches = []
    for column, _ in sources:
        col = column if isinstance(column, Column) else encode_values(column)
        if not full:
            col = col.take(take)
        batches.append(col.batch())

    def resolve(ref: Any) -> Any:
        return batches[ref.index] if isinstance(ref, MapInput) else ref

    def call() -> Any:
        return fn(*substitute(args, resolve), **substitute(kwargs, resolve))

    try:
        if timeout is None:
            out = call()
            if inspect.iscoroutine(out):  # an async batch task: one call, one event loop
                out = run_loop(out)
        else:
            out = _batch_within(call, timeout)
            if out is _TIMED_OUT:
                for j in runnable:
                    outcomes.timed_out(j, timeout)
                return results
        out = to_column(out)
        if len(out) != len(runnable):
            raise ValueError(f"batch task returned {len(out)} results for {len(runnable)} items")
    except Signal as sig:
        for j in runnable:
            outcomes.signalled(sig, j)
        return results
    except Exception as exc:
        outcomes.failed(runnable, exc)
        return results
    if full and len(runnable) == len(selected):
        return out
    for j, value in zip(runnable, out.items()):
        results[j] = value
    return results


_TIMED_OUT = object()


def _batch_within(call: Callable[[], Any], timeout: float) -> Any:
    """A batch call under the contract: its value (an async task's awaited), or ``_TIMED_OUT``;
    raises what the call raised.  Stopped by SIGALRM on the main thread, abandoned on a helper
    thread elsewhere; an async call's coroutine is cancelled on its loop."""
    started = time.monotonic()
    if _on_main_thread():
        previous = signal.signal(signal.SIGALRM, _alarm)
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                out = call()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _ItemTimeout:
            return _TIMED_OUT
        finally:
            signal.signal(signal.SIGALRM, previous)
    else:
        context = current_context()

        def on_helper() -> tuple[bool, Any]:
            running_item(context, None)  # the chunk's log records, of no one item
            try:
                return True, call()
            except BaseException as exc:  # noqa: BLE001 - raised again on the chunk's thread
                return False, exc

        pool = helpers(1)
        try:
            returned, out = pool.submit(on_helper).result(timeout=timeout)
        except FuturesTimeout:  # only the wait's: the call's own TimeoutError comes back as a value
            return _TIMED_OUT
        finally:
            pool.shutdown(wait=False)
        if not returned:
            raise out
    if inspect.iscoroutine(out):
        return run_loop(_awaited_within(out, max(timeout - (time.monotonic() - started), 0.0)))
    return out


async def _awaited_within(coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
    """An async batch call's coroutine: its value, or ``_TIMED_OUT`` once cancelled at its deadline."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        await cancel_within(task)  # it unwinds its own `finally`s, or is abandoned
        return _TIMED_OUT
    return task.result()
