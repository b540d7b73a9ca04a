"""A chunk's items, inside a worker: their inputs and their outcomes.

Input assembly: each mapped argument's items from the pieces a ``ChunkJob`` names (slices
of a constant, of a task's value, of upstream chunk results, flattened or not), with the
upstream items' codes, and the per-item call that puts an item's values in their slots.
``Outcomes``: the per-item codes of a chunk and, for items that did not succeed, what the
orchestrator must decide on (error, whether a retry may run, an ``rf.Retry``'s delay, where
an item that stopped mid-loop resumes).
The strategies that run the items are in ``item_runners``; ``chunk`` ties the two.
"""

from __future__ import annotations

import math

import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rayflow.core.refs import MapInput, substitute
from rayflow.engine import columns as C
from rayflow.engine.columns import Column, concat_columns, encode_results, encode_values, merge_results, to_column
from rayflow.engine.protocol import Piece, SignalOutcome, describe_error, signal_outcome
from rayflow.engine.worker.looping import LoopLimitExceeded
from rayflow.signals import Signal
from rayflow.states import StateType, error_text


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


def source_items(pieces: tuple[Piece, ...], values: list[Any], want_column: bool) -> tuple[Any, np.ndarray | None]:
    """One mapped argument's items in the chunk (a Column for ``want_column``, else a list)
    and their upstream items' codes (None where no piece comes from an upstream map's chunks)."""
    parts = [_items_of(p, values) for p in pieces]
    codes = None
    if any(c is not None for _, c in parts):
        codes = np.concatenate([c if c is not None else np.zeros(len(i), np.int8) for i, c in parts])
    if want_column:
        cols = [i if isinstance(i, Column) else encode_values(i) for i, _ in parts]
        return concat_columns(cols), codes
    if len(parts) == 1:  # a list of its own already (a slice, a new list): no copy
        only = parts[0][0]
        return (only.items() if isinstance(only, Column) else only), codes
    items: list[Any] = []
    for i, _ in parts:
        items.extend(i.items() if isinstance(i, Column) else i)
    return items, codes


class Outcomes:
    """Per-item codes of a chunk and what the orchestrator must know of items that did not succeed.

    ``codes`` is an int8 array (one per selected item, SUCCESS by default); the dicts hold
    entries only for items that raised (or were skipped: ``skips``, why), keyed by position in
    the chunk's selection.
    """

    __slots__ = ("codes", "errors", "retryable", "retry_delays", "retry_on", "skips", "pauses", "loops")

    def __init__(self, n: int, retry_on: Any):
        self.codes = np.zeros(n, dtype=np.int8)
        self.errors: dict[int, tuple[str, str, str]] = {}  # (type, message, traceback)
        self.pauses: dict[int, tuple[str, Any, float | None]] = {}  # paused items: (message, schema, timeout)
        self.skips: dict[int, tuple[None, str, None]] = {}  # SKIPPED items: (no type, why, no traceback)
        self.retryable: dict[int, bool] = {}  # FAILED items the task's retries may retry
        self.retry_delays: dict[int, float | None] = {}  # rf.Retry items: their delay
        self.retry_on = retry_on
        self.loops: dict[int, bytes] = {}  # items that stopped mid-loop: where their retry resumes (looping.ItemLoop)

    def failed(self, items: Any, exc: Exception) -> None:
        """``items`` raised ``exc``: FAILED, with its error (described once), retried only if one of ``retry_on``."""
        info = describe_error(exc)
        may_retry = isinstance(exc, self.retry_on) and not isinstance(exc, LoopLimitExceeded)
        error = (info.type, info.message, info.traceback)
        for j in items:
            self.codes[j] = C.FAILED
            self.errors[j] = error
            self.retryable[j] = may_retry

    def signalled(self, sig: Signal, j: int) -> None:
        outcome = signal_outcome(sig)
        if outcome.type is StateType.PAUSED:  # rf.pause: the item waits (engine.pauses), run again once decided
            self.pauses[j] = (outcome.message, getattr(sig, "schema", None), getattr(sig, "timeout", None))
            outcome = SignalOutcome(StateType.RETRYING, outcome.message, False, math.inf)
        self.codes[j] = C.CODE[outcome.type]
        if outcome.type is StateType.SKIPPED:  # a reason, not an error: no chunk error, no "first error"
            self.skips[j] = (None, outcome.message, None)
            return
        self.errors[j] = (f"{type(sig).__module__}.{type(sig).__qualname__}", outcome.message, "")
        if outcome.type is StateType.RETRYING:
            self.retry_delays[j] = outcome.delay
        else:
            self.retryable[j] = outcome.retryable

    def stopped(self, j: int, state: bytes | None) -> None:
        """Item ``j`` did not succeed after looping: ``state`` (None: it did not loop) is where its retry resumes."""
        if state is not None:
            self.loops[j] = state

    def timed_out(self, j: int, timeout: float) -> None:
        self.codes[j] = C.TIMED_OUT
        self.errors[j] = ("builtins.TimeoutError", f"item timed out after {timeout:g}s", "")
        self.retryable[j] = True

    def gate(
        self, sources: list, selected: Sequence[int], skip_on_skip: bool, upstream_keys: Sequence[str | None] = (), start: int = 0,
    ) -> Sequence[int]:
        """Items whose upstream item failed end TRIGGER_FAILED, skipped ones SKIPPED, each with the
        upstream item that decided it (``upstream_keys``: each source's map, ``start``: the chunk's
        first index); returns the rest (positions in ``selected``; a ``range`` when every item runs,
        so nothing is built per item)."""
        keys = list(upstream_keys) + [None] * (len(sources) - len(upstream_keys))
        upstream = [(c, key or "upstream") for (_, c), key in zip(sources, keys) if c is not None]
        if not upstream or not any((c if isinstance(selected, range) else c[selected]).any() for c, _ in upstream):
            return range(len(selected))
        runnable = []
        for j, i in enumerate(selected):
            ups = [(int(c[i]), key) for c, key in upstream]
            failed = next(((u, key) for u, key in ups if u in C.FINAL_FAILED), None)
            skipped = next((key for u, key in ups if u == C.SKIPPED), None) if skip_on_skip and failed is None else None
            if failed is not None:
                self.codes[j] = C.TRIGGER_FAILED
                code, key = failed
                self.errors[j] = ("rayflow.TriggerFailed", f"upstream item {key}[{start + i}] ended {C.CODES[code].value}", "")
            elif skipped is not None:
                self.codes[j] = C.SKIPPED
                self.skips[j] = (None, f"upstream item {skipped}[{start + i}] was skipped", None)
            else:
                runnable.append(j)
        return runnable


def caller(fn: Callable[..., Any], args: Any, kwargs: Any, nsources: int) -> tuple[Callable[..., Any], bool]:
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


def item_inputs(columns: list[Any], direct: bool, selected: Sequence[int], runnable: Sequence[int], everything: bool) -> Sequence[Any]:
    """The input of each runnable item, in order: the value itself for a ``direct`` call (the
    column as it is when every item runs), else the tuple of the item's values."""
    if direct:
        only = columns[0]
        return only if everything else [only[selected[j]] for j in runnable]
    if everything:
        return list(zip(*columns))
    return [tuple(col[selected[j]] for col in columns) for j in runnable]


def encode(results: list[Any], outcomes: Outcomes) -> Column:
    """The chunk's values as a Column; an item whose value cannot be pickled fails alone, named."""
    try:
        return encode_results(results)
    except Exception:  # noqa: BLE001 - find the item(s) at fault
        for j, value in enumerate(results):
            if outcomes.codes[j] != C.SUCCESS:
                continue
            try:
                pickle.dumps(value, protocol=5)
            except Exception as exc:  # noqa: BLE001
                reason = TypeError(f"its return value cannot be pickled: {error_text(type(exc).__name__, str(exc))}")
                outcomes.failed([j], reason)
                results[j] = None
        return encode_values(results)


def counts(codes: np.ndarray) -> dict[int, int]:
    """Items per state code (codes with none left out)."""
    if len(codes) and not codes.any():  # every item succeeded: no bincount (a copy to intp, 4 ms per 10^6)
        return {C.SUCCESS: len(codes)}
    return {c: n for c, n in enumerate(np.bincount(codes, minlength=len(C.CODES)).tolist()) if n}


def flat_count(values: Sequence[Any], codes: np.ndarray) -> int:
    """Items the successful values hold, for rf.flatten consumers."""
    return sum(len(v) for v, c in zip(values, codes.tolist()) if c == C.SUCCESS and v is not None)
