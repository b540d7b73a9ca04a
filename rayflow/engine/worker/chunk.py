"""One chunk of a mapped task, inside a worker.

Assembles each mapped argument's items from its pieces and gates items whose upstream item
failed or was skipped (``items``), looks the rest up in the task's item cache, runs the
function per item, or once on the whole chunk for ``batch=True`` (``item_runners``: one
strategy per kind of task, one timeout contract on every runner), and returns the
ChunkResult (values, per-item codes, attempts, errors) with a small ``ChunkSummary`` for the
orchestrator.  One item failing fails that item only.  A resumed run's chunk is loaded from
the results its earlier run stored (``_load_stored``).
"""

from __future__ import annotations

import collections
import contextvars
import dataclasses
import inspect
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from rayflow.core.reducers import partial_of
from rayflow.core.refs import NodeRef, substitute
from rayflow.engine import columns as C
from rayflow.engine.columns import ChunkResult, Column, encode_values, merge_results
from rayflow.engine.payload import load_payload
from rayflow.engine.protocol import ASYNC_CONCURRENCY, BUDGET_PROBE, MAX_REPORTED_ERRORS, ChunkJob, ChunkSummary
from rayflow.engine.worker.item_cache import ChunkCache
from rayflow.engine.worker.item_runners import ItemCalls, pick, run_batch
from rayflow.engine.worker.items import Outcomes, caller, counts, encode, flat_count, item_inputs, source_items
from rayflow.engine.worker.logs import current_item_cell, get_run_logger
from rayflow.exceptions import ResultStoreError
from rayflow.results import ResultStore
from rayflow.results_layout import chunk_name
from rayflow.states import error_text

_PAYLOADS: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
# set by a fused worker call (worker.fused): a chunk's result keeps its values as returned
# (ChunkResult.live) for the next stage, which then unpickles nothing
KEEP_LIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("rayflow_keep_live", default=False)


def _load(payload: bytes) -> Any:
    """A map's payload, unpickled once per worker process rather than once per chunk."""
    loaded = _PAYLOADS.get(payload)
    if loaded is None:
        loaded = _PAYLOADS[payload] = load_payload(payload)
        while len(_PAYLOADS) > 16:
            _PAYLOADS.popitem(last=False)
    return loaded


def payload_options(payload: bytes) -> dict[str, Any]:
    """A map's worker options (plan._worker_options), from its payload unpickled once per process."""
    return _load(payload)[5]


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
        stop = job.start + (summary.size if job.indices is None else job.size)  # a budgeted run may stop early
        name = chunk_name(run_id, job.map_key, job.start, stop, *patch)
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
    failed = np.isin(codes, C.FINAL_FAILED) | (codes == C.RETRYING)  # retrying then (rf.Retry, a pause): run again
    rerun = np.flatnonzero(failed).tolist()
    # a flatten consumer reads this map by its items' lengths: the stored successes
    flat = flat_count(result.values.items(), codes) if count_flat else 0
    summary = ChunkSummary(
        work_id=work_id,
        map_key=job.map_key,
        chunk=job.chunk,
        size=job.size,
        started_at=started,
        finished_at=time.time(),
        counts=counts(np.where(failed, C.RETRYING, codes)),  # the failed ones are retried
        retry=[(j, 0.0, 0) for j in rerun],  # attempt 0: the resumed run's retries are fresh
        flat_count=flat,
        loaded=True,
    )
    return result, summary


def _run(fn, args, kwargs, upstream, retry_on, options, job, work_id, values, started, run_id) -> tuple[ChunkResult, ChunkSummary]:
    nodes = dict(zip(upstream, values[: len(upstream)]))

    def resolve(ref: Any) -> Any:
        return nodes[ref._key] if isinstance(ref, NodeRef) else ref

    args, kwargs = substitute(args, resolve), substitute(kwargs, resolve)
    batch = options["batch"]
    sources = [source_items(pieces, values[len(upstream) :], want_column=batch) for pieces in job.sources]
    selected: Sequence[int] = list(job.indices) if job.indices is not None else range(job.size)
    budget = job.budget if job.indices is None else 0.0
    if budget and (batch or options.get("item_cache") is not None or options["timeout"] is not None
                   or (options.get("concurrency") or 1) > 1 or inspect.iscoroutinefunction(fn)):
        selected, budget = range(min(BUDGET_PROBE, job.size)), 0.0  # cannot stop midway: its first items only
    outcomes = Outcomes(len(selected), retry_on)
    runnable = outcomes.gate(sources, selected, options["skip_on_upstream_skip"], job.upstream, job.start)
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
        column = run_batch(fn, args, kwargs, sources, selected, runnable, outcomes, options["timeout"])
        if isinstance(column, list):  # not every item ran, or it raised: per-item values
            column, results = None, column
    else:
        results = _run_per_item(fn, args, kwargs, sources, job, selected, runnable, outcomes, options["timeout"],
                                options.get("concurrency"), options.get("max_loops", 1000), budget)
        if len(results) < len(selected):  # stopped at its budget: a chunk of its first items (the map has the rest)
            selected = range(len(results))
            outcomes.codes = outcomes.codes[: len(results)]
    if hits and results is not None:
        for j, value in zip(hits, cached.items()):
            results[j] = value
    if cache is not None:
        cache.keep(outcomes.codes, column if column is not None else results, run_id)
    if results is not None:
        for j in np.flatnonzero(outcomes.codes != C.SUCCESS).tolist():
            results[j] = None
    attempts = np.array(job.attempts, dtype=np.int16) if job.attempts is not None else np.ones(len(selected), np.int16)
    values = column if column is not None else encode(results, outcomes)
    partial = None
    if options.get("partial") and job.indices is None:  # rf.reduce folded into the chunks (core.reducers)
        ok = outcomes.codes == C.SUCCESS
        partial = _column_partial(options["partial"], column, ok) if results is None else None
        if partial is None:
            mine = results if results is not None else column.items()
            partial = partial_of(options["partial"], mine if ok.all() else [v for v, good in zip(mine, ok.tolist()) if good])
    result = ChunkResult(
        values=values,
        codes=outcomes.codes,
        attempts=attempts,
        errors=outcomes.errors,
        indices=np.array(selected, dtype=np.int64) if job.indices is not None else None,
        partial=partial,
        live=results if values.kind == "pylist" and KEEP_LIVE.get() else None,
    )
    flat = 0
    if options["count_flat"]:
        flat = flat_count(results if results is not None else column.items(), outcomes.codes)
    overhead = cache.overhead if cache is not None else 0.0
    summary = _summary(job, work_id, selected, outcomes, attempts, started, flat, cached=len(hits), overhead=overhead)
    if partial is not None and all(type(p) in (int, float, bool) for p in partial):  # a number, or () for none
        summary.partial = partial
    return result, summary


def _column_partial(op: str, column: Column, ok: np.ndarray) -> tuple[Any, ...] | None:
    """A batch chunk's part of reduce ``op`` (core.reducers) from its column, in numpy with no
    Python object per item, for the cases where that gives exactly what ``partial_of`` would:
    ``count``; ``min`` / ``max`` of ints or floats; ``sum`` of ints while no int64 overflow is
    possible (a float sum is left to Python's left-to-right order).  None: ``partial_of``."""
    if op == "count":
        return (int(ok.sum()),) if ok.any() else ()
    if column.kind == "arrow" and column.data.null_count == 0 and (
        pa.types.is_integer(column.data.type) or pa.types.is_floating(column.data.type)
    ):
        data = column.batch().to_numpy()
    elif column.kind == "numpy" and column.data.dtype.kind in "iuf":
        data = column.data
    else:
        return None
    if not ok.all():
        data = data[ok]
    if not len(data):
        return ()
    if op in ("min", "max"):
        if data.dtype.kind == "f" and np.isnan(data).any():  # Python's answer then depends on the order
            return None
        return ((data.min() if op == "min" else data.max()).item(),)
    if op == "sum" and data.dtype.kind in "iu":
        low, high = int(data.min()), int(data.max())
        if max(abs(low), abs(high)) * len(data) < (1 << 63):
            return (int(data.sum(dtype=np.int64)),)
    return None


def _run_per_item(fn, args, kwargs, sources, job, selected, runnable, outcomes, timeout, concurrency=None, max_loops=1000,
                  budget=0.0) -> list[Any]:
    """Call ``fn`` once per runnable item, with each mapped argument's item in its slot, by the
    strategy ``item_runners.pick`` chooses; returns one value per selected item (None where it
    did not run or did not succeed), or per item of the first ones only when it stopped at ``budget``."""
    call, direct = caller(fn, args, kwargs, len(sources))
    resume = None
    if job.looped:  # a retry of items that stopped mid-loop: each resumes where it stopped
        looped = dict(job.looped)
        resume = {j: looped[i] for j, i in enumerate(selected) if i in looped}
    is_async = inspect.iscoroutinefunction(fn)
    everything = job.indices is None and len(runnable) == job.size
    inputs = item_inputs([s[0] for s in sources], direct, selected, runnable, everything)
    at_once = None
    if is_async or (concurrency or 1) > 1:  # slots: limits by tag
        at_once = min(concurrency or ASYNC_CONCURRENCY, job.slots or len(runnable) or 1)
    calls = ItemCalls(call, inputs, runnable, len(selected), outcomes, timeout, current_item_cell(), at_once, is_async, job.map_key, max_loops, resume,
                      budget)
    return pick(calls)(calls)


def _summary(
    job: ChunkJob, work_id: int, selected: Sequence[int], outcomes: Outcomes, attempts: np.ndarray, started: float,
    flat: int, *, cached: int = 0, overhead: float = 0.0,
) -> ChunkSummary:
    """What the orchestrator learns: counts, and per item that did not succeed what it must decide on."""
    codes, errors = outcomes.codes, outcomes.errors
    if codes.any() or job.indices is not None:
        code_of, attempt_of = codes.tolist(), attempts.tolist()  # Python ints: no numpy scalar per item
    else:  # every item succeeded on its first run: nothing per item to say
        code_of = attempt_of = []
    failed = [
        (selected[j], code_of[j], outcomes.retryable.get(j, False), attempt_of[j])
        for j in np.flatnonzero((codes == C.FAILED) | (codes == C.TIMED_OUT)).tolist()
    ]
    retry = [(selected[j], outcomes.retry_delays.get(j), attempt_of[j]) for j in np.flatnonzero(codes == C.RETRYING).tolist()]
    paused = [(selected[j], *outcomes.pauses[j]) for j in outcomes.pauses]
    reported = [(selected[j], error_text(e[0], e[1])) for j, e in list(errors.items())[:MAX_REPORTED_ERRORS]]
    notes = {**outcomes.skips, **errors} if outcomes.skips else errors  # why an item did not succeed
    ran_again = None
    if job.indices is not None:  # a retry: a row for every item; as two arrays, tuples only for the noted
        ran_again = (codes, attempts)
        named: Any = sorted(notes)
    else:
        named = np.flatnonzero(codes != C.SUCCESS).tolist()
    none = (None, None, None)
    items = [(selected[j], code_of[j], attempt_of[j], *notes.get(j, none)) for j in named]
    return ChunkSummary(
        work_id=work_id,
        map_key=job.map_key,
        chunk=job.chunk,
        size=len(selected),
        started_at=started,
        finished_at=time.time(),
        counts=counts(codes),
        failed=failed,
        retry=retry,
        errors=reported,
        items=items,
        ran_again=ran_again,
        paused=paused,
        loops={selected[j]: state for j, state in outcomes.loops.items()} or None,
        flat_count=flat,
        indices=job.indices,
        cached=cached,
        overhead=overhead,
    )
