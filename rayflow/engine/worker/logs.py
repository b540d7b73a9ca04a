"""Logs written inside tasks: ``rf.get_run_logger()`` and ``@rf.task(log_prints=True)``.

While a unit of work runs, records of the ``rayflow.run`` logger (and, with
``log_prints``, every line printed) are captured with the run id, task key,
map index and trace/span ids, and travel back with the work's report; the
orchestrating actor stores them with the run.  A failed task's traceback is
added as an ERROR record.  At most ``MAX_RECORDS`` records per unit of work.

Whose record it is: the capture context and the item are looked up where the code that logs or
prints runs.  ``_CONTEXT`` (a contextvar) is the work running in this thread or asyncio task (set
by ``capture``, and by ``running_item`` on a chunk's helper threads and asyncio tasks, with
``_ITEM``, the item that thread or task runs); without ``_ITEM``, the item is the context's
shared cell, which a sequential chunk's loop updates.  ``asyncio.to_thread`` copies both.

Prints: Python has one ``sys.stdout`` per process, and works run at once in it (the in-process
runner's threads, a chunk's ``concurrency=`` threads, an async chunk's loop), so it is never
redirected per work.  While any work capturing prints runs, ``sys.stdout`` is one ``_Stdout``
that sends each write to the context of the thread or asyncio task writing it, into a partial
line of its own per (item, thread): a line is recorded, under that item's map index, when its
newline is printed (or, unfinished, when the work ends).  A write of code running for no work
capturing prints (another task, the driver) goes on to the stream ``_Stdout`` replaced.  A
thread a task starts itself (``threading.Thread``, a pool of its own) has no context: its lines
are taken as the work's, under the item its chunk runs at that moment, where that work is the
only one capturing prints in the process (as in a Ray worker, which runs one work at a time)
and the thread was not alive when the work started; they go to the replaced stream otherwise
(never under another work; under another item only if the thread outlives its item).
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

MAX_RECORDS = 1000
LOGGER_NAME = "rayflow.run"
# The work whose records this thread or asyncio task makes (None: none).
_CONTEXT: contextvars.ContextVar[_Context | None] = contextvars.ContextVar("rayflow_work", default=None)
# The item running in this thread or asyncio task, where a chunk runs items concurrently
# (``concurrency=``): it wins over the context's shared cell.
_ITEM: contextvars.ContextVar[int | None] = contextvars.ContextVar("rayflow_item", default=None)


class _Context:
    def __init__(self, run_id: str, task_key: str, trace: Any, map_start: int | None, indices: Any = None,
                 prints: bool = False, size: int | None = None):
        self.run_id = run_id
        self.task_key = task_key
        parts = trace[0].split("-") if trace else []
        self.trace_id = parts[1] if len(parts) == 4 else None
        self.span_id = parts[2] if len(parts) == 4 else None
        self.map_start = map_start
        self.indices = indices  # a job of chosen items (a retry): position j is item indices[j] of the chunk
        self.size = len(indices) if indices is not None else size  # positions in the job (None: not known)
        # Index within the chunk of the item running now; or a callable giving it, so the
        # hot loop of a chunk sets it once rather than per item (see worker.item_runners.run_dense).
        self.item: list[Any] = [None]
        self.records: list[tuple] = []
        self.dropped = 0
        self.prints = prints  # log_prints: its lines printed are records
        # Its prints are captured now: log_prints, until the work ends (a thread it left behind
        # prints to the real stdout then).
        self.capturing = prints
        # Threads alive when it started: not its own (the objects, held: an ident is reused once its thread ends).
        self.threads: frozenset[threading.Thread] = frozenset()
        # A partial line printed, per (item position, thread): one writer each, so no lock.
        self.partial: dict[tuple[int | None, int], str] = {}
        # rf.artifacts calls (engine.worker.artifacts): they go back with the report, as the records do
        self.artifacts: list[tuple] = []
        self.artifact_bytes = 0
        self.artifacts_dropped = 0

    def position(self) -> int | None:
        """The position in the job of the item running in this thread or asyncio task."""
        item = _ITEM.get()
        if item is None:
            item = self.item[0]
        return item() if callable(item) else item

    def map_index(self) -> int | None:
        return self.index_of(self.position())

    def index_of(self, position: int | None) -> int | None:
        """The map index of the item at ``position`` in the job running (None outside a map)."""
        if self.map_start is None or position is None:
            return None
        if self.size is not None and not 0 <= position < self.size:  # no item runs (a thread after its chunk's loop)
            return None
        return self.map_start + (int(self.indices[position]) if self.indices is not None else position)

    def add(self, level: str, message: str, at: float | None = None, *, item: int | None = None) -> None:
        """A record, of the item running now (or, given ``item``, of that item of the chunk)."""
        if len(self.records) >= MAX_RECORDS:
            self.dropped += 1
            return
        index = self.map_index() if item is None else self.index_of(item)
        self.records.append((at or time.time(), level, message, self.task_key, index, self.trace_id, self.span_id))

    def end_prints(self) -> None:
        """The work ended: its unfinished lines are recorded as they are."""
        for (position, _), text in list(self.partial.items()):
            self.add("INFO", text, item=position)
        self.partial.clear()


class _Capture(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        context = _CONTEXT.get()
        if context is None:
            return
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        context.add(record.levelname, message, record.created)


_handler = _Capture()
_logger = logging.getLogger(LOGGER_NAME)
_logger.addHandler(_handler)
_logger.setLevel(logging.DEBUG)
_logger.propagate = False


class _Stdout:
    """``sys.stdout`` while works capturing prints run: each write to the work (and item) of the
    thread or asyncio task writing it, else on to ``stream``, the stdout it replaced."""

    def __init__(self, stream: Any):
        self.stream = stream

    def _target(self) -> _Context | None:
        """The work this thread or asyncio task prints for now (None: no work capturing prints)."""
        context = _CONTEXT.get()
        if context is None:  # a thread of no work: a task's own, if one work alone is capturing
            alone = _capturing
            if len(alone) != 1 or threading.current_thread() in alone[0].threads:
                return None
            context = alone[0]
        return context if context.capturing else None

    def write(self, text: str, _get=_CONTEXT.get, _item=_ITEM.get, _thread=threading.get_ident) -> int:
        """The hot path of every print: two to a few writes a print()."""
        context = _get()
        if context is None or not context.capturing:
            context = self._target()
            if context is None:
                stream = self.stream  # None where the process has no stdout (print() then prints nothing)
                return len(text) if stream is None else stream.write(text)
        position = _item()
        if position is None:
            position = context.item[0]
            if callable(position):
                position = position()
        key = (position, _thread())  # a partial line per item and thread: one writer each, no lock
        partial = context.partial
        if "\n" not in text:
            partial[key] = partial.pop(key, "") + text
            return len(text)
        *lines, rest = (partial.pop(key, "") + text).split("\n")
        for line in lines:
            context.add("INFO", line, item=position)
        if rest:
            partial[key] = rest
        return len(text)

    def flush(self) -> None:  # a partial line waits for its newline: a flush does not cut it
        if self._target() is None and self.stream is not None:
            self.stream.flush()

    def isatty(self) -> bool:
        return self._target() is None and self.stream is not None and self.stream.isatty()

    def fileno(self) -> int:
        if self._target() is not None:
            raise io.UnsupportedOperation("fileno: prints are captured")
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"

    def __getattr__(self, name: str) -> Any:  # what a TextIOBase lacks (buffer, name, mode): the stream's
        if name == "stream":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.stream, name)


_lock = threading.Lock()
_capturing: tuple[_Context, ...] = ()  # the works capturing prints now (replaced, never changed in place)
# The one router, made once and never freed: print() holds sys.stdout as a borrowed reference while
# it writes, so a router freed when the last work ends, while another thread is inside print(), is
# a use after free (seen: AttributeError on the cleared instance, and segmentation faults).
_stdout: _Stdout | None = None
_installed = False  # whether sys.stdout is the router now (put there by the first capturing work)


def _start_prints(context: _Context) -> None:
    """The first work capturing prints puts the router over sys.stdout; the others join it."""
    global _capturing, _stdout, _installed
    context.threads = frozenset(threading.enumerate())
    with _lock:
        if not _capturing:
            if _stdout is None:
                _stdout = _Stdout(sys.stdout)
            elif sys.stdout is not _stdout:
                _stdout.stream = sys.stdout
            _installed = sys.stdout is not _stdout
            sys.stdout = _stdout
        _capturing = (*_capturing, context)


def _end_prints(context: _Context) -> None:
    """The last work capturing prints puts the stream back (unless someone replaced the router since)."""
    global _capturing, _installed
    with _lock:
        context.capturing = False
        _capturing = tuple(c for c in _capturing if c is not context)
        if not _capturing and _installed and sys.stdout is _stdout:
            sys.stdout = _stdout.stream  # the router stays alive (module global) for prints still in flight
            _installed = False
    context.end_prints()


def get_run_logger() -> logging.LoggerAdapter:
    """A logger whose records are stored with the run (outside a task: an ordinary logger)."""
    context = _CONTEXT.get()
    extra = {} if context is None else {"run_id": context.run_id, "task_key": context.task_key}
    return logging.LoggerAdapter(_logger, extra)


@contextlib.contextmanager
def capture(
    run_id: str, task_key: str, trace: Any, map_start: int | None, log_prints: bool, indices: Any = None,
    size: int | None = None,
) -> Iterator[_Context]:
    """Records (and, with ``log_prints``, printed lines) of one work; ``map_start``, ``indices``
    and ``size``: its chunk job's first map index, chosen items and size (None outside a map)."""
    context = _Context(run_id, task_key, trace, map_start, indices, prints=log_prints, size=size)
    token = _CONTEXT.set(context)
    if log_prints:
        _start_prints(context)
    try:
        yield context
    finally:
        if log_prints:
            _end_prints(context)
        _CONTEXT.reset(token)
        if context.dropped:
            context.records.append((time.time(), "WARNING", f"{context.dropped} more log records dropped",
                                    task_key, None, context.trace_id, context.span_id))


def current_context() -> _Context | None:
    """The capture context of this thread or asyncio task, to share with the threads of a concurrent chunk."""
    return _CONTEXT.get()


def running_item(context: _Context | None, item: int | None) -> None:
    """In a thread or asyncio task running one item of a concurrent chunk: records go to
    ``context`` with that item's map index."""
    if context is not None:
        _CONTEXT.set(context)
    _ITEM.set(item)


def current_item_cell() -> list[int | None] | None:
    """The cell run_chunk updates with the index of the item running, when logs are captured."""
    context = _CONTEXT.get()
    return None if context is None else context.item
