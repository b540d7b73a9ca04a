"""One chunk of a mapped task, inside a worker.

Assembles each mapped argument's items from its pieces, gates items whose
upstream item failed or was skipped, runs the function per item (or once on
the whole chunk for ``batch=True``) and returns the ChunkResult (values,
per-item codes, attempts, errors) with a small ``ChunkSummary`` for the
orchestrator.  One item failing fails that item only.  A per-item timeout
holds on every runner: where the chunk runs on the process's main thread (a
Ray worker) SIGALRM interrupts the item; on the in-process executor's threads,
where SIGALRM cannot reach, each item runs on a helper thread that is abandoned
at the item's deadline (``_run_items_abandoning``), as that executor abandons
a plain task past its timeout.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import inspect
import pickle
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures import wait as futures_wait
from typing import Any

import numpy as np

from rayflow.core.refs import MapInput, NodeRef, substitute
from rayflow.engine import columns as C
from rayflow.engine.columns import ChunkResult, Column, concat_columns, encode_values, merge_results, to_column
from rayflow.engine.payload import load_payload
from rayflow.engine.protocol import ASYNC_CONCURRENCY, MAX_REPORTED_ERRORS, ChunkJob, ChunkSummary, Piece, describe_error, signal_outcome
from rayflow.engine.worker.item_cache import ChunkCache
from rayflow.engine.worker.blocking import BlockWatch, warn_blocked
from rayflow.engine.worker.logs import current_context, current_item_cell, get_run_logger, running_item
from rayflow.exceptions import ResultStoreError
from rayflow.results import ResultStore
from rayflow.results_layout import chunk_name
from rayflow.signals import Signal
from rayflow.states import StateType, error_text

_PAYLOADS: collections.OrderedDict[bytes, Any] = collections.OrderedDict()


def _load(payload: bytes) -> Any:
    """A map's payload, unpickled once per worker process rather than once per chunk."""
    loaded = _PAYLOADS.get(payload)
    if loaded is None:
        loaded = _PAYLOADS[payload] = load_payload(payload)
        while len(_PAYLOADS) > 16:
            _PAYLOADS.popitem(last=False)
    return loaded


class _ItemTimeout(BaseException):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _ItemTimeout()


def _items_of(piece: Piece, values: list[Any]) -> tuple[list[Any] | Column, np.ndarray | None]:
    """The piece's items and, for upstream chunks, their upstream codes."""
    objs = [values[i] for i in piece.objs]
    if piece.kind == "column":
        return to_column(objs[0]).slice(piece.lo, piece.hi), None
    if piece.kind == "value":
        value = objs[0]
        if isinstance(value, (list, tuple)):
            return list(value[piece.lo : piece.hi]), None
        if _sliceable(value):
            return to_column(value).slice(piece.lo, piece.hi), None
        return list(value)[piece.lo : piece.hi], None
    if piece.kind == "flatten_value":
        flat = [x for inner in objs[0] for x in inner]
        return flat[piece.lo : piece.hi], None
    merged = merge_results(objs)
    if piece.kind == "chunk":
        return merged.values[piece.lo : piece.hi], merged.codes[piece.lo : piece.hi]
    flat = [x for v, c in zip(merged.values, merged.codes) if c == C.SUCCESS for x in v]  # flatten_chunk
    return flat[piece.lo : piece.hi], None


def _sliceable(value: Any) -> bool:
    return type(value).__module__.split(".")[0] in ("numpy", "pyarrow", "pandas")


def _source_items(pieces: tuple[Piece, ...], values: list[Any], want_column: bool) -> tuple[Any, np.ndarray | None]:
    parts = [_items_of(p, values) for p in pieces]
    codes = None
    if any(c is not None for _, c in parts):
        codes = np.concatenate([c if c is not None else np.zeros(len(i), np.int8) for i, c in parts])
    if want_column:
        cols = [i if isinstance(i, Column) else encode_values(i) for i, _ in parts]
        return concat_columns(cols), codes
    items: list[Any] = []
    for i, _ in parts:
        items.extend(i.items() if isinstance(i, Column) else i)
    return items, codes


class _Outcomes:
    """Per-item codes of a chunk and what the orchestrator must know of items that did not succeed.

    ``codes`` is an int8 array (one per selected item, SUCCESS by default); the dicts hold
    entries only for items that raised, keyed by position in the chunk's selection.
    """

    __slots__ = ("codes", "errors", "retryable", "retry_delays", "retry_on")

    def __init__(self, n: int, retry_on: Any):
        self.codes = np.zeros(n, dtype=np.int8)
        self.errors: dict[int, tuple[str, str, str]] = {}  # (type, message, traceback)
        self.retryable: dict[int, bool] = {}  # FAILED items the task's retries may retry
        self.retry_delays: dict[int, float | None] = {}  # rf.Retry items: their delay
        self.retry_on = retry_on

    def failed(self, items: Any, exc: Exception) -> None:
        """``items`` raised ``exc``: FAILED, with its error (described once), retried only if one of ``retry_on``."""
        info = describe_error(exc)
        error, may_retry = (info.type, info.message, info.traceback), isinstance(exc, self.retry_on)
        for j in items:
            self.codes[j] = C.FAILED
            self.errors[j] = error
            self.retryable[j] = may_retry

    def signalled(self, sig: Signal, j: int) -> None:
        outcome = signal_outcome(sig)
        self.codes[j] = C.CODE[outcome.type]
        if outcome.type is StateType.SKIPPED:
            return
        self.errors[j] = (f"{type(sig).__module__}.{type(sig).__qualname__}", outcome.message, "")
        if outcome.type is StateType.RETRYING:
            self.retry_delays[j] = outcome.delay
        else:
            self.retryable[j] = outcome.retryable

    def timed_out(self, j: int, timeout: float) -> None:
        self.codes[j] = C.TIMED_OUT
        self.errors[j] = ("builtins.TimeoutError", f"item timed out after {timeout:g}s", "")
        self.retryable[j] = True

    def gate(self, sources: list, selected: Sequence[int], skip_on_skip: bool) -> Sequence[int]:
        """Items whose upstream item failed end TRIGGER_FAILED, skipped ones SKIPPED; returns the rest
        (positions in ``selected``; a ``range`` when every item runs, so nothing is built per item)."""
        upstream = [c for _, c in sources if c is not None]
        if not upstream or not any(c[selected].any() for c in upstream):
            return range(len(selected))
        runnable = []
        for j, i in enumerate(selected):
            ups = [int(c[i]) for c in upstream]
            if any(u in C.FINAL_FAILED for u in ups):
                self.codes[j] = C.TRIGGER_FAILED
                self.errors[j] = ("rayflow.TriggerFailed", "upstream item failed", "")
            elif skip_on_skip and any(u == C.SKIPPED for u in ups):
                self.codes[j] = C.SKIPPED
            else:
                runnable.append(j)
        return runnable


def _caller(fn: Callable[..., Any], args: Any, kwargs: Any, nsources: int) -> tuple[Callable[..., Any], bool]:
    """A per-item call taking the tuple of the item's values; ``(fn, True)`` when fn takes the
    single mapped value as its only argument, the fastest case."""
    top_level = all(not isinstance(a, (list, tuple, dict, set)) for a in (*args, *kwargs.values()))
    if top_level:
        arg_slots = [(a.index if isinstance(a, MapInput) else None, a) for a in args]
        kw_slots = [(k, v.index if isinstance(v, MapInput) else None, v) for k, v in kwargs.items()]
        if nsources == 1 and len(arg_slots) == 1 and arg_slots[0][0] == 0 and not kw_slots:
            return fn, True

        def call(item: tuple[Any, ...]) -> Any:
            a = [item[i] if i is not None else v for i, v in arg_slots]
            k = {name: item[i] if i is not None else v for name, i, v in kw_slots}
            return fn(*a, **k)

        return call, False

    def call_nested(item: tuple[Any, ...]) -> Any:
        def resolve(ref: Any) -> Any:
            return item[ref.index] if isinstance(ref, MapInput) else ref

        return fn(*substitute(args, resolve), **substitute(kwargs, resolve))

    return call_nested, False


def run_chunk(
    payload: bytes, job: ChunkJob, work_id: int, values: list[Any], *, run_id: str = ""
) -> tuple[ChunkResult, ChunkSummary]:
    started = time.time()
    fn, args, kwargs, upstream, retry_on, options = _load(payload)
    if job.load:
        loaded = _load_stored(options["store"], job, work_id, started, count_flat=options["count_flat"])
        if loaded is not None:
            return loaded
    result, summary = _run(fn, args, kwargs, upstream, retry_on, options, job, work_id, values, started, run_id)
    if options.get("persist") and options.get("store"):  # written behind the chunk: see execute.write_behind
        # a retry's patch lays over the chunk in the order of its run attempt, then its work id
        patch = (None, None) if job.indices is None else (options.get("run_attempt", 1), work_id)
        name = chunk_name(run_id, job.map_key, job.start, job.start + job.size, *patch)
        summary = dataclasses.replace(summary, persist=(options["store"], name))
    return result, summary


def _load_stored(
    store: str, job: ChunkJob, work_id: int, started: float, *, count_flat: bool = False
) -> tuple[ChunkResult, ChunkSummary] | None:
    """A resumed run's chunk from the results its earlier run stored: the items that did not
    succeed then are reported for a retry (they run again); None when they cannot be read."""
    try:
        stored = [ResultStore(store).read(path) for path in job.load]
    except ResultStoreError as exc:
        get_run_logger().warning("chunk %d-%d runs again: %s", job.start, job.start + job.size, exc)
        return None
    if len(stored) == 1:
        result = stored[0]
    else:
        merged = merge_results(stored)
        result = ChunkResult(encode_values(merged.values), merged.codes, merged.attempts, merged.errors)
    codes = result.codes
    failed = np.isin(codes, C.FINAL_FAILED)
    rerun = np.flatnonzero(failed).tolist()
    # a flatten consumer reads this map by its items' lengths: the stored successes
    flat_count = _flat_count(result.values.items(), codes) if count_flat else 0
    summary = ChunkSummary(
        work_id=work_id,
        map_key=job.map_key,
        chunk=job.chunk,
        size=job.size,
        started_at=started,
        finished_at=time.time(),
        counts=_counts(np.where(failed, C.RETRYING, codes)),  # the failed ones are retried
        retry=[(j, 0.0, 0) for j in rerun],  # attempt 0: the resumed run's retries are fresh
        flat_count=flat_count,
        loaded=True,
    )
    return result, summary


def _run(fn, args, kwargs, upstream, retry_on, options, job, work_id, values, started, run_id) -> tuple[ChunkResult, ChunkSummary]:
    nodes = dict(zip(upstream, values[: len(upstream)]))

    def resolve(ref: Any) -> Any:
        return nodes[ref._key] if isinstance(ref, NodeRef) else ref

    args, kwargs = substitute(args, resolve), substitute(kwargs, resolve)
    batch = options["batch"]
    sources = [_source_items(pieces, values[len(upstream) :], want_column=batch) for pieces in job.sources]
    selected: Sequence[int] = list(job.indices) if job.indices is not None else range(job.size)
    outcomes = _Outcomes(len(selected), retry_on)
    runnable = outcomes.gate(sources, selected, options["skip_on_upstream_skip"])
    cache, hits, cached = None, [], None
    if options.get("item_cache") is not None and len(runnable):
        cache = ChunkCache(options["item_cache"], fn, args, kwargs)
        hits, cached = cache.look_up([s[0].items() if isinstance(s[0], Column) else s[0] for s in sources], selected, runnable)
        if hits:
            hit = set(hits)
            runnable = [j for j in runnable if j not in hit]
    column: Column | None = None
    results: list[Any] | None = None
    if len(hits) == len(selected):  # every item from the cache: its values as they were stored
        column = cached
    elif batch:
        column = _run_batch(fn, args, kwargs, sources, selected, runnable, outcomes)
        if isinstance(column, list):  # not every item ran, or it raised: per-item values
            column, results = None, column
    else:
        results = _run_per_item(fn, args, kwargs, sources, job, selected, runnable, outcomes, options["timeout"],
                                options.get("concurrency"))
    if hits and results is not None:
        for j, value in zip(hits, cached.items()):
            results[j] = value
    if cache is not None:
        cache.keep(outcomes.codes, column if column is not None else results, run_id)
    if results is not None:
        for j in np.flatnonzero(outcomes.codes != C.SUCCESS).tolist():
            results[j] = None
    attempts = np.array(job.attempts, dtype=np.int16) if job.attempts is not None else np.ones(len(selected), np.int16)
    result = ChunkResult(
        values=column if column is not None else _encode(results, outcomes),
        codes=outcomes.codes,
        attempts=attempts,
        errors=outcomes.errors,
        indices=np.array(selected, dtype=np.int64) if job.indices is not None else None,
    )
    flat_count = 0
    if options["count_flat"]:
        flat_count = _flat_count(results if results is not None else column.items(), outcomes.codes)
    overhead = cache.overhead if cache is not None else 0.0
    return result, _summary(job, work_id, selected, outcomes, attempts, started, flat_count, cached=len(hits), overhead=overhead)


def _encode(results: list[Any], outcomes: _Outcomes) -> Column:
    """The chunk's values as a Column; an item whose value cannot be pickled fails alone, named."""
    try:
        return encode_values(results)
    except Exception:  # noqa: BLE001 - find the item(s) at fault
        for j, value in enumerate(results):
            if outcomes.codes[j] != C.SUCCESS:
                continue
            try:
                pickle.dumps(value, protocol=5)
            except Exception as exc:  # noqa: BLE001
                reason = TypeError(f"its return value cannot be pickled: {type(exc).__name__}: {exc}")
                outcomes.failed([j], reason)
                results[j] = None
        return encode_values(results)


def _run_per_item(fn, args, kwargs, sources, job, selected, runnable, outcomes, timeout, concurrency=None) -> list[Any]:
    """Call ``fn`` once per runnable item, with each mapped argument's item in its slot;
    returns one value per selected item (None where it did not run or did not succeed)."""
    call, direct = _caller(fn, args, kwargs, len(sources))
    is_async = inspect.iscoroutinefunction(fn)
    columns = [s[0] for s in sources]
    everything = job.indices is None and len(runnable) == job.size
    if direct:
        only = columns[0]
        inputs = only if everything else [only[selected[j]] for j in runnable]
    elif everything:
        inputs = list(zip(*columns))
    else:
        inputs = [tuple(col[selected[j]] for col in columns) for j in runnable]
    cell = current_item_cell()
    if is_async or (concurrency or 1) > 1:
        results = [None] * len(selected)
        at_once = min(concurrency or ASYNC_CONCURRENCY, job.slots or len(runnable) or 1)  # slots: limits by tag
        if is_async:
            watch = BlockWatch(job.map_key)
            asyncio.run(_run_items_async(call, inputs, runnable, results, outcomes, timeout, at_once, watch))
            warn_blocked(watch, len(runnable))
        else:
            _run_items_threaded(call, inputs, runnable, results, outcomes, timeout, at_once)
        return results
    if timeout is not None:  # one contract on every thread: an item past its timeout is TIMED_OUT
        results: list[Any] = [None] * len(selected)
        if threading.current_thread() is threading.main_thread():  # a Ray worker: SIGALRM stops the item
            _run_items_timed(call, inputs, runnable, results, outcomes, timeout, cell)
        else:  # the in-process runner's threads, where SIGALRM cannot reach
            _run_items_abandoning(call, inputs, runnable, results, outcomes, timeout)
        return results
    if len(runnable) == len(selected):  # every item runs: runnable is 0..n-1, item k is input k
        return _run_dense(call, inputs, outcomes, cell)
    results = [None] * len(selected)
    _run_items(call, inputs, runnable, results, outcomes, cell)
    return results


def _counts(codes: np.ndarray) -> dict[int, int]:
    """Items per state code (codes with none left out)."""
    return {c: n for c, n in enumerate(np.bincount(codes, minlength=len(C.CODES)).tolist()) if n}


def _flat_count(values: Sequence[Any], codes: np.ndarray) -> int:
    """Items the successful values hold, for rf.flatten consumers."""
    return sum(len(v) for v, c in zip(values, codes.tolist()) if c == C.SUCCESS and v is not None)


def _summary(
    job: ChunkJob, work_id: int, selected: Sequence[int], outcomes: _Outcomes, attempts: np.ndarray, started: float,
    flat_count: int, *, cached: int = 0, overhead: float = 0.0,
) -> ChunkSummary:
    """What the orchestrator learns: counts, and per item that did not succeed what it must decide on."""
    codes, errors = outcomes.codes, outcomes.errors
    counts = _counts(codes)
    failed = [
        (selected[j], int(codes[j]), outcomes.retryable.get(j, False), int(attempts[j]))
        for j in np.flatnonzero((codes == C.FAILED) | (codes == C.TIMED_OUT)).tolist()
    ]
    retry = [(selected[j], outcomes.retry_delays.get(j), int(attempts[j])) for j in np.flatnonzero(codes == C.RETRYING).tolist()]
    reported = [(selected[j], error_text(e[0], e[1])) for j, e in list(errors.items())[:MAX_REPORTED_ERRORS]]
    named = np.arange(len(codes)) if job.indices is not None else np.flatnonzero(codes != C.SUCCESS)  # a retry: all
    items = [(selected[j], int(codes[j]), int(attempts[j]), *errors.get(j, (None, None, None))) for j in named.tolist()]
    return ChunkSummary(
        work_id=work_id,
        map_key=job.map_key,
        chunk=job.chunk,
        size=len(selected),
        started_at=started,
        finished_at=time.time(),
        counts=counts,
        failed=failed,
        retry=retry,
        errors=reported,
        items=items,
        flat_count=flat_count,
        indices=job.indices,
        cached=cached,
        overhead=overhead,
    )


def _run_items(call, inputs, runnable, results, outcomes: _Outcomes, cell=None) -> None:
    """Some items run (the others were gated, or this is a retry): ``results[runnable[k]]`` is
    ``call(inputs[k])``; nothing runs twice.  ``cell`` receives the index of the item running,
    for the map index of log records.
    """
    n = len(runnable)
    k = 0
    if cell is None:
        cell = [None]
    while k < n:
        try:
            while k < n:
                cell[0] = runnable[k]
                results[runnable[k]] = call(inputs[k])
                k += 1
        except Signal as sig:
            outcomes.signalled(sig, runnable[k])
            k += 1
        except Exception as exc:
            outcomes.failed((runnable[k],), exc)
            k += 1


def _run_dense(call, inputs, outcomes: _Outcomes, cell=None) -> list[Any]:
    """Every item runs, in order, at the speed of a list comprehension: ``map`` calls in C and
    ``list.extend`` appends each result as it comes, so when an item raises, the results before
    it are kept, the item's index is ``len(done)``, and the same iterator resumes after it.
    The item running is always the next one to be appended: log records read ``len(done)``.
    """
    done: list[Any] = []
    if cell is not None:
        cell[0] = done.__len__
    remaining = iter(inputs)
    while True:
        try:
            done.extend(map(call, remaining))
            return done
        except Signal as sig:
            outcomes.signalled(sig, len(done))
        except Exception as exc:
            outcomes.failed((len(done),), exc)
        done.append(None)


def _run_items_timed(call, inputs, runnable, results, outcomes: _Outcomes, timeout: float, cell=None) -> None:
    previous = signal.signal(signal.SIGALRM, _alarm)
    cell = cell if cell is not None else [None]
    try:
        for k, j in enumerate(runnable):
            cell[0] = j
            try:
                signal.setitimer(signal.ITIMER_REAL, timeout)
                try:
                    results[j] = call(inputs[k])
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except _ItemTimeout:
                outcomes.timed_out(j, timeout)
            except Signal as sig:
                outcomes.signalled(sig, j)
            except Exception as exc:
                outcomes.failed((j,), exc)
    finally:
        signal.signal(signal.SIGALRM, previous)


def _run_items_abandoning(call, inputs, runnable, results, outcomes: _Outcomes, timeout: float) -> None:
    """Items one after another with a timeout, off the main thread (the in-process runner's
    threads), where SIGALRM cannot reach: each item runs on a helper thread this thread waits
    on.  An item past its timeout is marked TIMED_OUT and its thread abandoned, as the
    in-process runner abandons a plain task past its timeout (a thread cannot be stopped: it
    runs on until its function returns, and its value is dropped); the next items run on a
    new helper.  The helpers are named after this thread (``<name>-item``), so whatever looks
    for this runner's lingering threads by name finds them too."""
    context = current_context()
    prefix = f"{threading.current_thread().name}-item"

    def one(k: int, j: int) -> tuple[str, Any]:
        return _call_item(call, inputs[k], context, j)

    k, n = 0, len(runnable)
    while k < n:
        pool = ThreadPoolExecutor(1, thread_name_prefix=prefix)
        try:
            while k < n:
                j = runnable[k]
                future = pool.submit(one, k, j)
                k += 1
                try:
                    kind, value = future.result(timeout=timeout)
                except FuturesTimeout:
                    outcomes.timed_out(j, timeout)
                    break  # its helper is abandoned: the next items get a new one
                _record_item(results, outcomes, j, kind, value)
        finally:
            pool.shutdown(wait=False)


async def _run_items_async(
    call, inputs, runnable, results, outcomes: _Outcomes, timeout: float | None, concurrency: int, watch: BlockWatch,
) -> None:
    """An async task's items on one event loop, at most ``concurrency`` at once; each item's
    timeout, failure and signal are its own.  Outcomes are recorded by this loop's thread;
    ``watch`` times each item's steps (a step that blocks the loop is reported once per chunk)."""
    slots = asyncio.Semaphore(concurrency)
    context = current_context()

    async def one(k: int, j: int) -> None:
        async with slots:
            running_item(context, j)  # this asyncio task's context: log records name item j
            task = asyncio.ensure_future(watch.timed(call(inputs[k]), j))
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
                await asyncio.wait({task})  # let it unwind its own `finally`s
                outcomes.timed_out(j, timeout)
                return
            try:
                results[j] = task.result()
            except Signal as sig:
                outcomes.signalled(sig, j)
            except Exception as exc:
                outcomes.failed((j,), exc)

    await asyncio.gather(*(one(k, j) for k, j in enumerate(runnable)))


def _run_items_threaded(call, inputs, runnable, results, outcomes: _Outcomes, timeout: float | None, concurrency: int) -> None:
    """A plain task's items on ``concurrency`` threads.  An item past its timeout is marked
    TIMED_OUT and its thread abandoned (a thread cannot be stopped): it keeps its slot until
    its function returns, and its value is dropped."""
    context = current_context()
    started: dict[int, float] = {}

    def one(k: int, j: int) -> tuple[str, Any]:
        started[j] = time.monotonic()
        return _call_item(call, inputs[k], context, j)

    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="rayflow-item")
    try:
        futures = {pool.submit(one, k, j): j for k, j in enumerate(runnable)}
        pending = set(futures)
        while pending:
            done, pending = futures_wait(pending, timeout=None if timeout is None else 0.05, return_when=FIRST_COMPLETED)
            for future in done:
                j = futures[future]
                _record_item(results, outcomes, j, *future.result())
            if timeout is not None:
                now = time.monotonic()
                late = {f for f in pending if futures[f] in started and now - started[futures[f]] > timeout}
                for future in late:
                    outcomes.timed_out(futures[future], timeout)
                pending -= late
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _call_item(call, item: Any, context: Any, j: int) -> tuple[str, Any]:
    """Item ``j`` run on a helper thread: ("ok", value), ("signal", sig) or ("error", exc)."""
    running_item(context, j)
    try:
        return "ok", call(item)
    except Signal as sig:
        return "signal", sig
    except Exception as exc:
        return "error", exc


def _record_item(results: list[Any], outcomes: _Outcomes, j: int, kind: str, value: Any) -> None:
    """What ``_call_item`` returned, kept: item ``j``'s value, signal or failure."""
    if kind == "ok":
        results[j] = value
    elif kind == "signal":
        outcomes.signalled(value, j)
    else:
        outcomes.failed((j,), value)


def _run_batch(fn, args, kwargs, sources, selected, runnable, outcomes: _Outcomes) -> Column | list[Any]:
    """batch=True: one call with whole columns; an exception fails every item it was given.

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

    try:
        out = fn(*substitute(args, resolve), **substitute(kwargs, resolve))
        if inspect.iscoroutine(out):  # an async batch task: one call, one event loop
            out = asyncio.run(out)
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
