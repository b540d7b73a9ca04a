"""Arrow encoding of mapped items and of chunk results.

A ``Column`` holds the items of a map input or a chunk's results:

- ``arrow``: a typed pyarrow Array, used when it gives every item back
  exactly (ints, floats, strings, bools, bytes, or dicts of those with the
  same keys), so a round trip never turns 1 into 1.0 or a tuple into a list;
- ``pickled``: a binary column of pickled items, for everything else;
- ``numpy`` / ``table``: user inputs kept as they are and sliced zero-copy
  (a numpy array, a pyarrow Table / RecordBatch or pandas DataFrame, whose
  items are its rows as dicts);
- ``pylist``: a list input or a chunk's results of plain ints, floats, bools
  and None, pickled in blocks (engine.pickled_lists); a slice is a view of
  the blocks, a take or a batch becomes one of the kinds above.

A ``ChunkResult`` is what one chunk task returns: its values plus a state
code, attempt count and (for failures only) error text per item.  A retry of
some items returns a ChunkResult for just those items (``indices``), which
readers lay over the chunk's first result (``merge_results``).
"""

from __future__ import annotations

import itertools
import operator
import pickle
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from rayflow.engine.pickled_lists import pickle_atoms
from rayflow.states import FAILED_TYPES, StateType

# Per-item state codes, as stored in chunk results.
CODES: tuple[StateType, ...] = (
    StateType.SUCCESS,
    StateType.FAILED,
    StateType.SKIPPED,
    StateType.TRIGGER_FAILED,
    StateType.TIMED_OUT,
    StateType.CANCELLED,
    StateType.RETRYING,
)
CODE = {t: i for i, t in enumerate(CODES)}
SUCCESS, FAILED, SKIPPED, TRIGGER_FAILED, TIMED_OUT, CANCELLED, RETRYING = range(len(CODES))
FINAL_FAILED = tuple(CODE[t] for t in CODES if t in FAILED_TYPES)  # the codes of states.FAILED_TYPES

_SCALARS = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_(), bytes: pa.binary()}


@dataclass(frozen=True)
class Column:
    data: Any
    kind: str  # "arrow" | "pickled" | "numpy" | "table"

    def __len__(self) -> int:
        return len(self.data) if self.kind != "table" else self.data.num_rows

    def slice(self, start: int, stop: int) -> Column:
        if self.kind == "numpy":
            return Column(self.data[start:stop], "numpy")
        if self.kind == "pylist":
            return Column(self.data.window(start, stop), "pylist")
        return Column(self.data.slice(start, stop - start), self.kind)

    def items(self) -> list[Any]:
        if self.kind == "numpy":
            return self.data.tolist()
        if self.kind == "pylist":
            return self.data.values()
        if self.kind == "pickled":
            return [None if b is None else pickle.loads(b) for b in self.data.to_pylist()]
        return self.data.to_pylist()

    def take(self, idx: np.ndarray) -> Column:
        """The items at positions ``idx``, in that order, as a Column (of the same kind, except a
        ``pylist``, whose picked items are encoded again: ``encode_values``)."""
        if self.kind == "numpy":
            return Column(self.data[idx], "numpy")
        if self.kind == "pylist":
            values = self.items()
            return encode_values([values[i] for i in idx.tolist()])
        return Column(self.data.take(pa.array(idx, type=pa.int64())), self.kind)

    def batch(self) -> Any:
        """The chunk for ``batch=True`` tasks: a pyarrow Array or RecordBatch (a list if pickled)."""
        if self.kind == "numpy":
            return pa.array(self.data)
        if self.kind == "pickled":
            return self.items()
        if self.kind == "pylist":
            return encode_values(self.items()).batch()
        if self.kind == "table":
            data = self.data
            return data.combine_chunks().to_batches()[0] if isinstance(data, pa.Table) and data.num_rows else (
                data if isinstance(data, pa.RecordBatch) else pa.RecordBatch.from_pylist([], schema=data.schema)
            )
        data = self.data
        return data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data


def _uniform_type(values: Sequence[Any], types: set[type] | None = None) -> pa.DataType | None:
    """The Arrow type that gives every value back unchanged, or None (``types``: theirs, if known)."""
    types = set(map(type, values)) if types is None else set(types)
    types.discard(type(None))
    if not types:
        return pa.null() if values else pa.int64()
    if len(types) > 1:
        return None
    kind = types.pop()
    if kind in _SCALARS:
        return _SCALARS[kind]
    first = next(v for v in values if v is not None)
    if kind is dict:
        keys = tuple(first)
        if not keys or not all(isinstance(k, str) for k in keys):
            return None
        fields = []
        for k in keys:
            inner = _uniform_type([None if v is None else v.get(k) for v in values])
            if inner is None or pa.types.is_struct(inner):
                return None
            fields.append(pa.field(k, inner))
        if not all(v is None or (type(v) is dict and tuple(v) == keys) for v in values):
            return None
        if any(v is not None and any(v[k] is None for k in keys) for v in values):
            return None  # a None inside a dict would not be told apart from a missing key
        return pa.struct(fields)
    return None


_NUMPY_SCALARS = {int: np.int64, float: np.float64}
_LISTED_TYPES = 1 << 18  # up to this many values, their types are listed (2 MB of pointers), then counted


def _one_type(values: Sequence[Any]) -> type | None:
    """The type of every value when they all have the same exact type (a subclass is another
    type), else None.  Listing the types and counting the first is 1.7 ms per 125,000 ints
    against 2.8 ms for a set of them; past that, counting them as they come allocates nothing
    (10^7 ints: 210 ms, against 270 for a set)."""
    first = type(values[0])
    if len(values) <= _LISTED_TYPES:
        return first if list(map(type, values)).count(first) == len(values) else None
    return first if operator.countOf(map(type, values), first) == len(values) else None


def encode_values(values: Sequence[Any]) -> Column:
    """Encode Python values as a typed column when faithful, else as pickles.

    Plain ints or plain floats (no None among them) become a numpy array: building it and
    reading it back (``tolist``) cost a fraction of Arrow's per-item conversion, and it is
    as faithful.  Other uniform values become a typed Arrow array.
    """
    only = _one_type(values) if len(values) else None
    types = {only} if only is not None else set(map(type, values))
    if only is not None:
        dtype = _NUMPY_SCALARS.get(only)
        if dtype is not None:
            try:  # (fromiter: half np.array's time for 10^6 ints; the types are known exact)
                return Column(np.fromiter(values, dtype=dtype, count=len(values)), "numpy")
            except OverflowError:  # an int beyond int64
                pass
    arrow_type = _uniform_type(values, types)
    if arrow_type is not None:
        try:
            return Column(pa.array(values, type=arrow_type), "arrow")
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass  # e.g. an int beyond int64
    return Column(pa.array([pickle.dumps(v, protocol=5) for v in values], type=pa.binary()), "pickled")


def encode_results(values: Sequence[Any]) -> Column:
    """A chunk's results, or a list input, as a Column: plain ints, floats and bools (None
    among them) pickled as lists (engine.pickled_lists: a fraction of a numpy column's cost to
    make), else ``encode_values``."""
    blocks = pickle_atoms(values)
    return Column(blocks, "pylist") if blocks is not None else encode_values(values)


def to_column(value: Any) -> Column:
    """A mapped input as a Column; numpy, pandas and pyarrow inputs are not copied."""
    if isinstance(value, Column):
        return value
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise TypeError(f"a mapped numpy array must be 1-dimensional, got shape {value.shape}")
        return Column(value, "numpy") if value.dtype != object else encode_values(value.tolist())
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        return Column(value, "arrow")
    if isinstance(value, (pa.Table, pa.RecordBatch)):
        return Column(value, "table")
    module = type(value).__module__
    if module.startswith("pandas"):
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            return Column(pa.Table.from_pandas(value, preserve_index=False), "table")
        if isinstance(value, pd.Series):
            return to_column(value.to_numpy())
    if isinstance(value, range):
        if value and all(-(1 << 63) <= v < (1 << 63) for v in (value[0], value[-1])):
            return Column(np.arange(value.start, value.stop, value.step, dtype=np.int64), "numpy")
        return encode_values(list(value))
    if isinstance(value, (list, tuple)):  # read, never kept: no copy
        return encode_results(value)
    if isinstance(value, dict):
        return encode_values(list(value))
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return encode_values(list(value))
    raise TypeError(f"cannot map over a {type(value).__name__}: it is not iterable")


def next_items(stream: Iterator[Any], count: int) -> tuple[Column | None, int, bool]:
    """Up to ``count`` items of a generator input as a Column: (column or None, items, exhausted)."""
    items = list(itertools.islice(stream, count))
    return (encode_values(items) if items else None), len(items), len(items) < count


def concat_columns(columns: Sequence[Column]) -> Column:
    if not columns:
        return encode_values([])
    if len(columns) == 1:
        return columns[0]
    kinds = {c.kind for c in columns}
    if kinds == {"numpy"} and len({c.data.dtype for c in columns}) == 1:  # else ints would become floats
        return Column(np.concatenate([c.data for c in columns]), "numpy")
    if kinds == {"arrow"} and len({c.data.type for c in columns}) == 1:
        chunks = [ch for c in columns for ch in (c.data.chunks if isinstance(c.data, pa.ChunkedArray) else [c.data])]
        return Column(pa.chunked_array(chunks, type=columns[0].data.type), "arrow")
    return encode_values([v for c in columns for v in c.items()])


@dataclass
class ChunkResult:
    """Results of one chunk task (or of a retry of some of its items)."""

    values: Column
    codes: np.ndarray  # int8 per item
    attempts: np.ndarray  # int16 per item
    errors: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # local index -> (type, msg, tb)
    indices: np.ndarray | None = None  # for a retry: which items of the chunk these are
    # a first run's part of the rf.reduce that consumes its map (core.reducers): (part,), () when
    # no item succeeded, None when none was made
    partial: tuple | None = None
    # inside a fused worker call only (worker.fused), never pickled: the values as the chunk's
    # function returned them, when ``values`` holds them pickled (``pylist``): the next stage
    # reads them without unpickling
    live: list[Any] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.codes)

    def __getstate__(self) -> dict[str, Any]:
        """A first run whose items all succeeded on their first attempt travels without its codes
        and attempts (3 bytes per item: 1.5 MB more to store for a chunk of 500,000 items), which
        are rebuilt when it is read."""
        state = dict(self.__dict__)
        state.pop("live", None)
        n = len(self.codes)
        if n and self.indices is None and not self.codes.any() and bool((self.attempts == 1).all()):
            state["codes"], state["attempts"] = n, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["codes"], int):
            n = state["codes"]
            state["codes"], state["attempts"] = np.zeros(n, np.int8), np.ones(n, np.int16)
        self.__dict__.update(state)


@dataclass
class MergedChunk:
    """A chunk's final picture: first result with its retries laid over it."""

    values: list[Any]
    codes: np.ndarray
    attempts: np.ndarray
    errors: dict[int, tuple[str, str, str]]


def merge_results(results: Sequence[ChunkResult]) -> MergedChunk:
    """(With ``live`` values and nothing to lay over them, ``values`` is that very list: read it.)"""
    base = results[0]
    if len(results) == 1 and not base.errors and not base.codes.any():
        return MergedChunk(base.live if base.live is not None else base.values.items(), base.codes, base.attempts, {})
    values = list(base.live) if base.live is not None else base.values.items()
    codes, attempts = base.codes.copy(), base.attempts.copy()
    errors = dict(base.errors)
    for patch in results[1:]:
        patch_values = patch.values.items()
        for j, i in enumerate(patch.indices.tolist()):
            values[i] = patch_values[j]
            codes[i] = patch.codes[j]
            attempts[i] = patch.attempts[j]
            errors.pop(i, None)
            if j in patch.errors:
                errors[i] = patch.errors[j]
    for i in np.flatnonzero(codes != SUCCESS).tolist():
        values[i] = None
    return MergedChunk(values, codes, attempts, errors)


def successful_column(results: Sequence[ChunkResult]) -> Column:
    """A chunk's successful values as one Column; no Python objects unless retries patched it."""
    base = results[0]
    if len(results) > 1:
        return encode_values(successful_values(merge_results(results)))
    if not base.codes.any():
        return base.values
    return base.values.take(np.flatnonzero(base.codes == SUCCESS))


def successful_values(merged: MergedChunk) -> list[Any]:
    if not merged.codes.any():
        return merged.values
    return [v for v, c in zip(merged.values, merged.codes.tolist()) if c == SUCCESS]
