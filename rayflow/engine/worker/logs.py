"""Logs written inside tasks: ``rf.get_run_logger()`` and ``@rf.task(log_prints=True)``.

While a unit of work runs, records of the ``rayflow.run`` logger (and, with
``log_prints``, every line printed) are captured with the run id, task key,
map index and trace/span ids, and travel back with the work's report; the
orchestrating actor stores them with the run.  A failed task's traceback is
added as an ERROR record.  At most ``MAX_RECORDS`` records per unit of work.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

MAX_RECORDS = 1000
LOGGER_NAME = "rayflow.run"
_local = threading.local()
# The item running in this thread or asyncio task, where a chunk runs items concurrently
# (``concurrency=``): it wins over the context's shared cell.
_ITEM: contextvars.ContextVar[int | None] = contextvars.ContextVar("rayflow_item", default=None)


class _Context:
    def __init__(self, run_id: str, task_key: str, trace: Any, map_start: int | None, indices: Any = None):
        self.run_id = run_id
        self.task_key = task_key
        parts = trace[0].split("-") if trace else []
        self.trace_id = parts[1] if len(parts) == 4 else None
        self.span_id = parts[2] if len(parts) == 4 else None
        self.map_start = map_start
        self.indices = indices  # a job of chosen items (a retry): position j is item indices[j] of the chunk
        # Index within the chunk of the item running now; or a callable giving it, so the
        # hot loop of a chunk sets it once rather than per item (see worker.item_runners.run_dense).
        self.item: list[Any] = [None]
        self.records: list[tuple] = []
        self.dropped = 0
        # rf.artifacts calls (engine.worker.artifacts): they go back with the report, as the records do
        self.artifacts: list[tuple] = []
        self.artifact_bytes = 0
        self.artifacts_dropped = 0

    def map_index(self) -> int | None:
        item = _ITEM.get()
        if item is None:
            item = self.item[0]
        return self.index_of(item() if callable(item) else item)

    def index_of(self, position: int | None) -> int | None:
        """The map index of the item at ``position`` in the job running (None outside a map)."""
        if self.map_start is None or position is None:
            return None
        return self.map_start + (int(self.indices[position]) if self.indices is not None else position)

    def add(self, level: str, message: str, at: float | None = None, *, item: int | None = None) -> None:
        """A record, of the item running now (or, given ``item``, of that item of the chunk)."""
        if len(self.records) >= MAX_RECORDS:
            self.dropped += 1
            return
        index = self.map_index() if item is None else self.index_of(item)
        self.records.append((at or time.time(), level, message, self.task_key, index, self.trace_id, self.span_id))


class _Capture(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        context = getattr(_local, "context", None)
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


class _Prints(io.TextIOBase):
    def __init__(self, context: _Context):
        self.context = context
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            self.context.add("INFO", line)
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.context.add("INFO", self.pending)
            self.pending = ""


def get_run_logger() -> logging.LoggerAdapter:
    """A logger whose records are stored with the run (outside a task: an ordinary logger)."""
    context = getattr(_local, "context", None)
    extra = {} if context is None else {"run_id": context.run_id, "task_key": context.task_key}
    return logging.LoggerAdapter(_logger, extra)


@contextlib.contextmanager
def capture(
    run_id: str, task_key: str, trace: Any, map_start: int | None, log_prints: bool, indices: Any = None
) -> Iterator[_Context]:
    context = _Context(run_id, task_key, trace, map_start, indices)
    _local.context = context
    prints = _Prints(context) if log_prints else None
    try:
        if prints is not None:
            with contextlib.redirect_stdout(prints):
                yield context
            prints.flush()
        else:
            yield context
    finally:
        _local.context = None
        if context.dropped:
            context.records.append((time.time(), "WARNING", f"{context.dropped} more log records dropped",
                                    task_key, None, context.trace_id, context.span_id))


def current_context() -> _Context | None:
    """This thread's capture context, to share with the threads of a concurrent chunk."""
    return getattr(_local, "context", None)


def running_item(context: _Context | None, item: int | None) -> None:
    """In a thread or asyncio task running one item of a concurrent chunk: records go to
    ``context`` with that item's map index."""
    if context is not None:
        _local.context = context
    _ITEM.set(item)


def current_item_cell() -> list[int | None] | None:
    """The cell run_chunk updates with the index of the item running, when logs are captured."""
    context = getattr(_local, "context", None)
    return None if context is None else context.item
