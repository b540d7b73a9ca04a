"""Per-item caching of a mapped task, inside the worker that runs a chunk.

A mapped task with ``cache_key_fn`` keys every item: the task's code and
its arguments that are not mapped (hashed once per chunk), then the item's
mapped values (hashed per item).  Under ``rf.cache.lineage`` the constant
part is the plan's lineage key (code, constants, upstream lineage), so an
upstream value passed whole to every item is never hashed; the item's own
values always are (they are what the map iterates over).  Any other key
function is called per item with the item's arguments.

The cache of one task is a folder of *segments*, ``cache/<flow>/<task
key>/items/seg-<time ns>-<id>.arrow``: Arrow IPC files of two columns, the
16-byte key of each item and its value, one file per chunk that computed
new items.  The driver lists the folder once when it compiles the plan
(expired segments left out, none under ``refresh_cache``); a worker reads
that snapshot's keys once per process into one sorted index and answers a
chunk's lookup with one vectorised search.  Hits come back SUCCESS with the
stored values and are not run; the chunk's summary counts them as cached.
Segments written during a run are not seen by that run.  Where two
segments hold one key (racing runs, a refresh), the newest one answers.

Nothing here fails a chunk: an unreadable segment, an argument that cannot
be hashed, a key function that raises or a segment that cannot be written
is one warning in the run's logs, and the items concerned run uncached.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import pickle
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from rayflow.cache import CacheContext, Inputs, Lineage, Uncacheable, _explained, _value_bytes, code_fingerprint
from rayflow.core.refs import MapInput, find_refs, substitute
from rayflow.engine.columns import Column, concat_columns, encode_values
from rayflow.engine.protocol import ItemCachePolicy
from rayflow.engine.worker.logs import get_run_logger
from rayflow.exceptions import ResultStoreError
from rayflow.results import ResultStore
from rayflow.results_layout import segment_name
from rayflow.states import error_text

KEY_BYTES = 16
_KEY_TYPE = pa.binary(KEY_BYTES)
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})
_BUFFER_TYPES = {np.dtype(np.int64): pa.int64(), np.dtype(np.float64): pa.float64()}


# -- keys ----------------------------------------------------------------------


class _Keyer:
    """Computes the 16-byte keys of a chunk's items; None for an item that cannot be keyed."""

    def __init__(self, policy: ItemCachePolicy, fn: Any, args: Any, kwargs: Any):
        self.policy, self.fn = policy, fn
        self.key_fn = policy.key_fn
        self.warned: set[str] = set()
        try:
            bound = dict(inspect.signature(fn).bind(*args, **kwargs).arguments)
        except (TypeError, ValueError):  # the call itself will say what is wrong
            bound = {"<args>": args, "<kwargs>": kwargs}
        self.bound = bound
        ignored = getattr(self.key_fn, "ignored", frozenset())
        self.fast = type(self.key_fn) in (Inputs, Lineage)
        self.top: list[tuple[str, int]] = []  # (argument, mapped source) given one item each
        self.nested: list[tuple[str, Any]] = []  # arguments holding mapped values inside
        constants: dict[str, Any] = {}
        for name, value in bound.items():
            if isinstance(value, MapInput):
                self.top.append((name, value.index))
            elif any(isinstance(r, MapInput) for r in find_refs(value)):
                self.nested.append((name, value))
            else:
                constants[name] = value
        self.base: Any = None
        if not self.fast:
            return
        keep = lambda name: name not in ignored  # noqa: E731
        self.top = [(n, i) for n, i in sorted(self.top) if keep(n)]
        self.nested = [(n, v) for n, v in sorted(self.nested, key=lambda e: e[0]) if keep(n)]
        base = hashlib.blake2b(digest_size=KEY_BYTES, person=b"rayflow-item")
        base.update(type(self.key_fn).__name__.encode() + b"\0")
        if isinstance(self.key_fn, Lineage):
            base.update(policy.lineage_key.encode())
        else:
            base.update(code_fingerprint(fn).encode())
            for name in sorted(n for n in constants if keep(n)):
                try:
                    base.update(name.encode() + b"\0" + hashlib.sha256(_value_bytes(name, constants[name])).digest())
                except Uncacheable as exc:
                    self._warn(str(exc))
                    base = None
                    break
        self.base = base

    def _warn(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            get_run_logger().warning("task %s: items run uncached: %s", self.policy.task_key, message)

    def keys(self, columns: Sequence[Any], positions: Sequence[int]) -> list[bytes | None]:
        if not self.fast:
            return [self._generic_key(columns, i) for i in positions]
        if self.base is None:
            return [None] * len(positions)
        if len(self.top) == 1 and not self.nested:  # one mapped argument: the common case, kept tight
            return self._single_keys(columns[self.top[0][1]], positions)
        return [self._fast_key(columns, i) for i in positions]

    def _single_keys(self, column: Sequence[Any], positions: Sequence[int]) -> list[bytes | None]:
        name = self.top[0][0]
        base = self.base.copy()
        base.update(name.encode())
        copy, dumps, plain = base.copy, pickle.dumps, _PLAIN
        out: list[bytes | None] = []
        append = out.append
        for i in positions:
            value = column[i]
            digest = copy()
            if type(value) in plain:  # what _value_bytes gives a scalar, without its checks
                digest.update(dumps(value, 5))
            else:
                try:
                    digest.update(_value_bytes(name, value))
                except Uncacheable as exc:
                    self._warn(str(exc))
                    append(None)
                    continue
            append(digest.digest())
        return out

    def _fast_key(self, columns: Sequence[Any], i: int) -> bytes | None:
        digest = self.base.copy()
        try:
            for name, index in self.top:
                digest.update(name.encode())
                digest.update(_value_bytes(name, columns[index][i]))
            for name, value in self.nested:
                digest.update(name.encode())
                digest.update(_value_bytes(name, substitute(value, lambda r: columns[r.index][i])))
        except Uncacheable as exc:
            self._warn(str(exc))
            return None
        return digest.digest()

    def _generic_key(self, columns: Sequence[Any], i: int) -> bytes | None:
        item = {name: substitute(value, lambda r: columns[r.index][i] if isinstance(r, MapInput) else r)
                for name, value in self.bound.items()}
        policy = self.policy
        context = CacheContext(policy.flow_name, policy.task_key, policy.task_name, self.fn, policy.lineage_key)
        try:
            key, _ = _explained(self.key_fn, context, item)
        except Uncacheable as exc:
            self._warn(str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - the user's key function
            self._warn(f"its cache_key_fn raised {error_text(type(exc).__name__, str(exc))}")
            return None
        if key is None:
            return None
        if not isinstance(key, str):
            self._warn(f"cache_key_fn returned {type(key).__name__}, not a str")
            return None
        return hashlib.blake2b(key.encode(), digest_size=KEY_BYTES, person=b"rayflow-user").digest()


# -- the index of a snapshot -------------------------------------------------------


class _Index:
    """Every key of a snapshot's segments, sorted by its first 8 bytes (then newest segment
    first), with the segment and row that hold it; segments are kept memory-mapped."""

    def __init__(self, store: ResultStore, segments: tuple[str, ...], task_key: str):
        self.store = store
        self.tables: list[pa.Table | None] = []
        firsts, seconds, segs, rows = [], [], [], []
        for s, path in enumerate(segments):
            try:
                table = store.read_table(path)
                pairs = _key_pairs(table.column("key"))
            except (ResultStoreError, KeyError, ValueError, pa.ArrowException) as exc:
                get_run_logger().warning("task %s: cache segment skipped, its items run again: %s", task_key, exc)
                self.tables.append(None)
                continue
            self.tables.append(table)
            firsts.append(pairs[:, 0])
            seconds.append(pairs[:, 1])
            segs.append(np.full(len(pairs), s, dtype=np.int32))
            rows.append(np.arange(len(pairs), dtype=np.int64))
        if not firsts:
            self.first = np.empty(0, np.uint64)
            return
        # newest segment first, then a stable sort by key: of equal keys the newest comes first
        first, second, seg, row = (np.concatenate(a[::-1]) for a in (firsts, seconds, segs, rows))
        order = np.argsort(first, kind="stable")
        self.first, self.second, self.seg, self.row = first[order], second[order], seg[order], row[order]

    def find(self, keys: bytes) -> tuple[np.ndarray, np.ndarray]:
        """For keys (n×16 bytes): which are found, and where (positions into the sorted index)."""
        pairs = np.frombuffer(keys, dtype=np.uint64).reshape(-1, 2)
        if not len(self.first):
            return np.zeros(len(pairs), dtype=bool), np.zeros(len(pairs), dtype=np.int64)
        at = np.searchsorted(self.first, pairs[:, 0])
        at = np.minimum(at, len(self.first) - 1)
        found = (self.first[at] == pairs[:, 0]) & (self.second[at] == pairs[:, 1])
        return found, at

    def values(self, at: np.ndarray) -> Column:
        """The stored values at these index positions, in that order, as one Column."""
        segs, rows = self.seg[at], self.row[at]
        if len(segs) and (segs == segs[0]).all():  # all from one segment: one take
            return self._take(int(segs[0]), rows)
        order = np.argsort(segs, kind="stable")
        pieces = []
        for s in np.unique(segs).tolist():
            pieces.append(self._take(s, rows[order[segs[order] == s]]))
        grouped = concat_columns(pieces)  # by segment; put back in the order asked
        return grouped.take(np.argsort(order, kind="stable"))

    def _take(self, s: int, rows: np.ndarray) -> Column:
        table = self.tables[s]
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        picked = table.column("value").take(pa.Array.from_buffers(pa.int64(), len(rows), [None, pa.py_buffer(rows)]))
        return _stored_column(picked, (table.schema.metadata or {}).get(b"kind", b"arrow").decode())


def _key_pairs(keys: Any) -> np.ndarray:
    """A fixed-size-binary(16) column as an n×2 array of uint64 (no copy for one chunk)."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if keys.type != _KEY_TYPE or keys.null_count:
        raise ValueError(f"key column is {keys.type}, not {_KEY_TYPE}")
    data = keys.buffers()[1]
    raw = np.frombuffer(data, dtype=np.uint8)[keys.offset * KEY_BYTES : (keys.offset + len(keys)) * KEY_BYTES]
    return raw.view(np.uint64).reshape(-1, 2)


def _stored_column(column: Any, kind: str) -> Column:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if kind == "numpy":
        return Column(column.to_numpy(zero_copy_only=False), "numpy")
    return Column(column, "pickled" if kind == "pickled" else "arrow")


_INDEXES: OrderedDict[tuple[str, tuple[str, ...]], _Index] = OrderedDict()
_BUILDING = threading.Lock()


def _index(policy: ItemCachePolicy) -> _Index:
    """The snapshot's index, built once per worker process (a few maps' worth kept)."""
    memo = (policy.store, policy.segments)
    with _BUILDING:  # chunks on threads (the local runner) wait for one build
        index = _INDEXES.get(memo)
        if index is None:
            index = _INDEXES[memo] = _Index(ResultStore(policy.store), policy.segments, policy.task_key)
            while len(_INDEXES) > 4:
                _INDEXES.popitem(last=False)
    return index


# -- one chunk -------------------------------------------------------------------


class ChunkCache:
    """A chunk's lookup (before it runs) and its new segment (after)."""

    def __init__(self, policy: ItemCachePolicy, fn: Any, args: Any, kwargs: Any):
        self.policy = policy
        self.keyer = _Keyer(policy, fn, args, kwargs)
        self.keyed: list[int] = []  # chunk positions that ran with a key
        self.keys: list[bytes] = []
        self.overhead = 0.0  # seconds spent loading the index and writing the segment: not per item

    def look_up(self, columns: Sequence[Any], selected: Sequence[int], runnable: Sequence[int]) -> tuple[list[int], Column | None]:
        """Keys the runnable items; returns the chunk positions of the cached ones (ascending)
        and their values, in that order, as one Column (None when none is cached)."""
        keys = self.keyer.keys(columns, [selected[j] for j in runnable])
        keyed = [(j, k) for j, k in zip(runnable, keys) if k is not None]
        hit: list[int] = []
        values = None
        if keyed and self.policy.segments:
            loading = time.perf_counter()
            index = _index(self.policy)
            self.overhead += time.perf_counter() - loading
            found, at = index.find(b"".join(k for _, k in keyed))
            if found.any():
                where = np.flatnonzero(found)
                hit = [keyed[k][0] for k in where.tolist()]
                values = index.values(at[where])
                missed = np.flatnonzero(~found).tolist()
                keyed = [keyed[k] for k in missed]
        for j, key in keyed:
            self.keyed.append(j)
            self.keys.append(key)
        return hit, values

    def keep(self, codes: np.ndarray, values: Any, run_id: str) -> None:
        """Write the items that ran with a key and succeeded as one new segment.
        ``values``: per chunk position, a list or a Column."""
        ok = [(j, key) for j, key in zip(self.keyed, self.keys) if codes[j] == 0]
        if not ok:
            return
        positions = np.array([j for j, _ in ok], dtype=np.int64)
        if isinstance(values, Column):
            column = values.take(positions)
        else:
            column = encode_values([values[j] for j in positions.tolist()])
        try:
            array, kind = _storable(column)
            keys = pa.FixedSizeBinaryArray.from_buffers(_KEY_TYPE, len(ok), [None, pa.py_buffer(b"".join(k for _, k in ok))])
            table = pa.table({"key": keys, "value": array}).replace_schema_metadata({"kind": kind, "run_id": run_id})
            sink = io.BytesIO()
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            name = segment_name(self.policy.flow_name, self.policy.task_key, time.time_ns(), uuid.uuid4().hex[:8])
            writing = time.perf_counter()
            try:  # mostly the wait for the disk (fsync): a fixed cost of the chunk, not of its items
                ResultStore(self.policy.store).write_bytes(name, sink.getvalue())
            finally:
                self.overhead += time.perf_counter() - writing
        except Exception as exc:  # noqa: BLE001 - a cache that cannot take it is a warning, never a failure
            get_run_logger().warning("task %s: %d item(s) not cached: %s", self.policy.task_key, len(ok), exc)


def _storable(column: Column) -> tuple[pa.Array, str]:
    """A chunk's values as one Arrow array and the kind of Column they are read back as."""
    if column.kind == "numpy" and column.data.dtype in _BUFFER_TYPES:  # no copy, and none of the
        data = np.ascontiguousarray(column.data)  # pandas import pa.array(ndarray) costs a process
        return pa.Array.from_buffers(_BUFFER_TYPES[data.dtype], len(data), [None, pa.py_buffer(data)]), "numpy"
    if column.kind == "numpy" and column.data.dtype != object:
        return pa.array(column.data), "numpy"
    if column.kind == "table":
        column = encode_values(column.items())
    if column.kind == "numpy":
        column = encode_values(column.items())
    data = column.data
    if isinstance(data, pa.ChunkedArray):
        data = data.combine_chunks()
    return data, column.kind
