"""Where results outlive a run: a directory or any pyarrow filesystem URI.

``ResultStore(location)`` reads and writes values under one root, through
``pyarrow.fs`` (a local path, ``file:///...``, ``s3://bucket/prefix``,
``gs://...``), so every node of a cluster that can reach the root shares it.
The default root is ``RAYFLOW_RESULTS``, else ``RAYFLOW_HOME/results``.

How a value is written, by what it is:

- a pyarrow Table or RecordBatch, a pandas DataFrame: an Arrow IPC file of
  the table (pandas keeps its index and dtypes through Arrow's pandas metadata);
- a pyarrow Array or ChunkedArray, a 1-D numpy array of a fixed-width dtype:
  an Arrow IPC file of one column, read back as the same kind;
- anything else: cloudpickle.

Writes are atomic: the bytes go to a temporary name beside the target, which
is then renamed over it, so a reader sees a whole file or none.  A file that
cannot be read back (truncated, not what its name says) raises
``CorruptResultError`` naming it; a missing one ``MissingResultError``.  A
path that would leave the root (``runs/../../x``, built from a run id, a task
key or a cache key) is refused before it is touched: ``UnsafePathError``.

This module sits below the engine (the worker writes and reads results) and
imports nothing of rayflow but its exceptions and ``paths``.
"""

from __future__ import annotations

import io
import os
import pathlib
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import cloudpickle
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

from rayflow.exceptions import CorruptResultError, MissingResultError, ResultStoreError
from rayflow.paths import under_root
from rayflow.states import error_text

KIND_KEY = b"rayflow.kind"
ARROW_SUFFIX = ".arrow"
PICKLE_SUFFIX = ".pkl"


def default_location(environ: Mapping[str, str] | None = None) -> str:
    """``RAYFLOW_RESULTS``, else ``RAYFLOW_HOME/results`` (``~/.rayflow/results``)."""
    environ = os.environ if environ is None else environ
    if environ.get("RAYFLOW_RESULTS"):
        return environ["RAYFLOW_RESULTS"]
    home = environ.get("RAYFLOW_HOME") or str(pathlib.Path.home() / ".rayflow")
    return str(pathlib.Path(home).resolve() / "results")


def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    if "://" in location:
        try:
            return pafs.FileSystem.from_uri(location)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ResultStoreError(f"cannot use result storage {location!r}: {exc}") from None
    return pafs.LocalFileSystem(), str(pathlib.Path(location).resolve())


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the store's root, with its suffix
    size: int
    mtime: float | None


class ResultStore:
    def __init__(self, location: str | None = None):
        location = location or default_location()
        self.fs, self.root = _filesystem(location)
        # A local path is made absolute here, in the driver: workers elsewhere get the same place.
        self.location = location if "://" in location else self.root
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def probe(self, timeout: float = 15.0) -> None:
        """Check that the store answers, within ``timeout`` seconds (a remote one may hang)."""
        outcome: list[BaseException | None] = []

        def look() -> None:
            try:
                self.fs.get_file_info(self.root)
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - reported below
                outcome.append(exc)

        thread = threading.Thread(target=look, daemon=True)
        thread.start()
        thread.join(timeout)
        if not outcome:
            raise ResultStoreError(f"result storage {self.location!r} did not answer within {timeout:g}s")
        if outcome[0] is not None:
            raise ResultStoreError(f"cannot use result storage {self.location!r}: {outcome[0]}") from None

    def __reduce__(self) -> Any:  # travels to workers by location: filesystems reconnect there
        return (ResultStore, (self.location,))

    def _full(self, path: str) -> str:
        """Every read, write, listing and delete goes through here: ``path`` (made of run ids,
        task keys and cache keys) must stay under the root (UnsafePathError)."""
        return under_root(self.root, path)

    def describe(self, path: str) -> str:
        """The file's full name, as errors and the CLI show it."""
        return f"{(self.location if '://' in self.location else self.root).rstrip('/')}/{path}"

    # -- writing -------------------------------------------------------------

    def write(self, name: str, value: Any, *, first_wins: bool = False) -> str:
        """Write ``value`` as ``name`` (plus the suffix of its format), atomically; returns the path.

        ``first_wins``: if ``name`` is stored already (another writer committed first), keep
        that value and return its path: racing writers of one cache entry agree on the first.
        """
        if first_wins and (existing := self.find(name)) is not None:
            return existing
        data, suffix = encode_result(value)
        path = name + suffix
        if not self.write_bytes(path, data, first_wins=first_wins):
            return path  # another writer committed this name between find and now
        other = name + (PICKLE_SUFFIX if suffix == ARROW_SUFFIX else ARROW_SUFFIX)
        self.delete(other)  # a name holds one value: an older one in the other format goes
        return path

    def write_bytes(self, path: str, data: bytes, *, first_wins: bool = False) -> bool:
        """Write atomically; False when ``first_wins`` and the file was there already."""
        full = self._full(path)
        parent = full.rsplit("/", 1)[0]
        temporary = f"{parent}/.tmp-{uuid.uuid4().hex}-{full.rsplit('/', 1)[-1]}"
        try:
            if self.local:  # written, flushed to disk, then renamed: whole after a power loss too
                _private_dirs(parent)  # owner-only, as the files
                with os.fdopen(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600), "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                if not first_wins:
                    os.replace(temporary, full)
                    return True
                try:
                    os.link(temporary, full)  # atomic, and never over an existing file
                    return True
                except FileExistsError:
                    return False
                finally:
                    self._discard(temporary)
            self.fs.create_dir(parent, recursive=True)
            with self.fs.open_output_stream(temporary) as out:
                out.write(data)
            if first_wins and self.fs.get_file_info(full).type == pafs.FileType.File:
                self._discard(temporary)  # best effort where the filesystem has no exclusive rename
                return False
            self.fs.move(temporary, full)
            return True
        except (OSError, pa.ArrowException) as exc:
            self._discard(temporary)
            raise ResultStoreError(f"cannot write result {self.describe(path)}: {exc}") from exc

    def _discard(self, full: str) -> None:
        try:
            self.fs.delete_file(full)
        except OSError:
            pass

    def delete(self, path: str) -> bool:
        try:
            self.fs.delete_file(self._full(path))
            return True
        except (FileNotFoundError, OSError):
            return False

    # -- reading -------------------------------------------------------------

    def find(self, name: str) -> str | None:
        """The stored path for ``name`` (either format), or None."""
        for suffix in (ARROW_SUFFIX, PICKLE_SUFFIX):
            info = self.fs.get_file_info(self._full(name + suffix))
            if info.type == pafs.FileType.File:
                return name + suffix
        return None

    def read_bytes(self, path: str) -> bytes:
        full = self._full(path)
        try:
            with self.fs.open_input_file(full) as source:
                return source.read()
        except (OSError, pa.ArrowException) as exc:
            raise ResultStoreError(f"cannot read {self.describe(path)}: {exc}") from exc

    def stat(self, path: str) -> StoredFile | None:
        info = self.fs.get_file_info(self._full(path))
        if info.type != pafs.FileType.File:
            return None
        return StoredFile(path, info.size or 0, info.mtime.timestamp() if info.mtime is not None else None)

    def read(self, path: str) -> Any:
        full = self._full(path)
        try:
            with self.fs.open_input_file(full) as source:
                data = source.read()
        except FileNotFoundError:
            raise MissingResultError(f"result file {self.describe(path)} does not exist", path=self.describe(path)) from None
        except OSError as exc:
            if self.fs.get_file_info(full).type == pafs.FileType.NotFound:
                raise MissingResultError(f"result file {self.describe(path)} does not exist", path=self.describe(path)) from None
            raise ResultStoreError(f"cannot read result {self.describe(path)}: {exc}") from exc
        try:
            return decode_result(data, path)
        except Exception as exc:  # noqa: BLE001 - any decoding failure: the file is not what it says
            raise CorruptResultError(
                f"result file {self.describe(path)} is corrupted or unreadable ({error_text(type(exc).__name__, str(exc))})",
                path=self.describe(path),
            ) from exc

    def read_table(self, path: str) -> pa.Table:
        """An Arrow IPC file as a Table, memory-mapped where the store is local."""
        full = self._full(path)
        try:
            source = pa.memory_map(full) if self.local else self.fs.open_input_file(full)
            with source:
                return pa.ipc.open_file(source).read_all()
        except FileNotFoundError:
            raise MissingResultError(f"result file {self.describe(path)} does not exist", path=self.describe(path)) from None
        except (OSError, pa.ArrowException) as exc:
            raise CorruptResultError(f"result file {self.describe(path)} is corrupted or unreadable ({exc})", path=self.describe(path)) from exc

    def list(self, prefix: str = "") -> Iterator[StoredFile]:
        """Every stored result under ``prefix`` (temporary files left by a crash are skipped)."""
        base = self._full(prefix).rstrip("/")
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except (OSError, pa.ArrowException) as exc:
            raise ResultStoreError(f"cannot list {self.describe(prefix)}: {exc}") from exc
        for info in infos:
            if info.type != pafs.FileType.File or info.base_name.startswith(".tmp-"):
                continue
            relative = info.path[len(self.root.rstrip("/")) + 1 :]
            mtime = info.mtime.timestamp() if info.mtime is not None else None
            yield StoredFile(relative, info.size or 0, mtime)


# -- formats -----------------------------------------------------------------


def encode_result(value: Any) -> tuple[bytes, str]:
    """The bytes of ``value`` and the suffix naming their format (Arrow when it keeps the value
    as it is, else a pickle; a value neither can store raises ResultStoreError)."""
    try:
        table = _as_table(value)
    except Exception:  # noqa: BLE001 - beyond Arrow (an int past 64 bits, say): pickled
        table = None
    if table is not None:
        sink = io.BytesIO()
        with ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue(), ARROW_SUFFIX
    try:
        return cloudpickle.dumps(value, protocol=5), PICKLE_SUFFIX
    except Exception as exc:  # noqa: BLE001 - a lock, a socket
        raise ResultStoreError(f"a {type(value).__name__} cannot be stored: {error_text(type(exc).__name__, str(exc))}") from None


def _as_table(value: Any) -> pa.Table | None:
    kind: str
    if isinstance(value, pa.Table):
        table, kind = value, "table"
    elif isinstance(value, pa.RecordBatch):
        table, kind = pa.Table.from_batches([value]), "batch"
    elif isinstance(value, (pa.Array, pa.ChunkedArray)):
        table, kind = pa.table({"value": value}), "array" if isinstance(value, pa.Array) else "chunked"
    elif type(value) is np.ndarray and value.ndim == 1 and value.dtype.kind in "biufcmM":  # not a masked array
        try:
            table, kind = pa.table({"value": pa.array(value)}), f"numpy:{value.dtype.str}"
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None
    elif type(value).__module__.startswith("pandas") and type(value).__name__ == "DataFrame":
        index = value.index
        plain_index = type(index).__name__ in ("Index", "RangeIndex") and index.dtype != object and getattr(index, "freq", None) is None
        from pandas.api.types import infer_dtype

        texts = all(dtype != object or infer_dtype(value[name], skipna=False) == "string" for name, dtype in value.dtypes.items())
        if not texts or not plain_index or not value.columns.is_unique:
            return None  # object columns (mixed types, lists) and fancy indexes do not survive Arrow
        table, kind = pa.Table.from_pandas(value, preserve_index=None), "pandas"
        if not table.to_pandas().equals(value):  # checked, never silently changed
            return None
    else:
        return None
    metadata = dict(table.schema.metadata or {})
    metadata[KIND_KEY] = kind.encode()
    return table.replace_schema_metadata(metadata)


def decode_result(data: bytes, path: str) -> Any:
    if path.endswith(PICKLE_SUFFIX):
        return cloudpickle.loads(data)
    table = ipc.open_file(pa.BufferReader(data)).read_all()
    metadata = dict(table.schema.metadata or {})
    kind = metadata.pop(KIND_KEY, b"table").decode()
    if kind == "pandas":
        return table.to_pandas()
    table = table.replace_schema_metadata(metadata or None)
    if kind == "table":
        return table
    if kind == "batch":
        return table.combine_chunks().to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], schema=table.schema)
    column = table.column("value")
    if kind == "chunked":
        return column
    if kind == "array":
        return column.combine_chunks()
    if kind.startswith("numpy:"):
        return column.to_numpy().astype(np.dtype(kind[len("numpy:") :]), copy=False)
    raise ValueError(f"unknown stored kind {kind!r}")


def _private_dirs(path: str) -> None:
    """Make folder ``path`` with every missing folder above it owner-only (0700): ``os.makedirs``
    gives its mode to the last folder only."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:  # another writer made it meanwhile
            pass
