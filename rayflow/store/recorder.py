"""``HistoryRecorder``: a run's observer that buffers its rows and writes them in batches from a
thread of its own, so the flow never waits on the disk; a failing store is retried within bounds,
and what could not be written by the run's end is kept in a file (store.recovery) or logged as lost.

Its timings (the flush period, close's bounds, the retries after close) read an injected
``Clock`` (monotonic time and waits on it); a test's fake clock moves only when told."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import socket
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rayflow.engine.observers import RunObserver
from rayflow.states import State, error_text
from rayflow.store.recovery import _LIVE_SPILLS, BACKGROUND_SECONDS
from rayflow.store.schema import redact_params

if TYPE_CHECKING:
    from rayflow.store.history import RunStore

FLUSH_SECONDS = 0.5
CLOSE_SECONDS = 3.0  # at a run's end, how long its last rows may wait for a failing store
MAX_PENDING_ROWS = 100_000  # per kind of row, held for a retry while the store fails

logger = logging.getLogger(__name__)


class Clock:
    """The recorder's time: ``now()`` (monotonic seconds) and ``wait``, which returns True once
    ``event`` is set, False once ``seconds`` have passed on this clock (``event`` None: a sleep)."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event | None, seconds: float) -> bool:
        if event is None:
            time.sleep(seconds)
            return False
        return event.wait(seconds)


REAL_CLOCK = Clock()


class HistoryRecorder(RunObserver):
    """Buffers a run's events and writes them in batches (a listener of the orchestrator)."""

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        flow_name: str,
        params: Mapping[str, Any],
        task_keys: list[str],
        graph: Mapping[str, Any] | None = None,
        *,
        attempt: int = 1,
        clock: Clock = REAL_CLOCK,
        start: bool = True,
    ):
        self.store = store
        self._clock = clock
        self.run_id = run_id
        self.attempt = attempt
        self.flow_name = flow_name
        self.params = json.dumps(redact_params(params))
        self.task_keys = json.dumps(task_keys)
        self._graph = json.dumps(graph) if graph is not None else None  # written with the first run row
        self._graph_written: int | None = None  # the store's generation it was written in
        self.trace_id: str | None = None
        self._seq: dict[str, int] = {}
        self._transitions: list[tuple] = []
        self._chunks: list[tuple] = []
        self._logs: list[tuple] = []
        self._items: list[tuple] = []  # (task key, WorkFacts.items): made rows by the writer thread (_rows)
        self._artifacts: list[tuple] = []  # rf.artifacts calls, from the reports (store.artifacts writes them)
        self._run: tuple | None = None
        self._lock = threading.Lock()  # the buffers, filled by the orchestrator's calls of this observer's hooks
        # Rows taken from the buffers but not written yet (a write failed): retried on the next
        # flush, bounded by MAX_PENDING_ROWS per kind.  Only flush() touches them, under _write_lock.
        self._pending_run: tuple | None = None
        self._pending: tuple[list, list, list, list, list] = ([], [], [], [], [])  # transitions, chunks, logs, items, artifacts
        self._write_lock = threading.Lock()
        self._problem: str | None = None  # the failure last logged, so each is logged once
        self._dropped = 0  # rows given up because too many were held
        self._deadline = 0.0  # set by close(): when the last retries stop
        self._abandoned = False  # close() gave up waiting for a blocked write
        self._background = False  # close() returned, the writer thread retries on its own
        self._gave_up = False
        self._written = threading.Event()  # every row is written, the writer thread is done
        self._spill_lock = threading.Lock()
        self._spilled: pathlib.Path | None = None  # the rows close() could not write, in a file
        self._applied = False  # those rows are written, and the file marked so
        self._stop = threading.Event()
        self._ended = threading.Event()  # the writer thread has returned
        self._thread = threading.Thread(target=self._loop, name=f"history-{run_id}", daemon=True)
        self._thread_lock = threading.Lock()
        self._thread_started = False
        if start:
            self.start_writer()

    def start_writer(self) -> None:
        """Start the writer thread (once).  ``start=False`` defers it: the FlowRunActor starts
        it once the run's first tasks are submitted, off a short run's path; close() starts
        it if nobody did.  Rows are buffered meanwhile; its first flush is FLUSH_SECONDS later anyway."""
        with self._thread_lock:
            if not self._thread_started:
                self._thread_started = True
                self._thread.start()

    def note_trace(self, trace_id: str, span_id: str | None) -> None:
        """The run's trace: in its run row, and with its graph (a resumed run links to it)."""
        with self._write_lock:
            self.trace_id = trace_id
            if self._graph is not None and span_id is not None and self._graph_written is None:  # with the first run row
                graph = json.loads(self._graph)
                graph["trace"] = [trace_id, span_id]
                self._graph = json.dumps(graph)
        with self._lock:
            if self._run is not None:  # the RUNNING row was made before the trace id was known
                self._run = (*self._run[:7], trace_id, *self._run[8:])

    def on_transition(self, *, run_id: str, task_key: str | None, old: State, new: State) -> None:
        with self._lock:
            if task_key is None:
                self._run = (
                    self.run_id, self.flow_name, self.params, new.type.value, new.message,
                    new.started_at, new.finished_at, self.trace_id, self.task_keys, self.attempt,
                )
                return
            seq = self._seq[task_key] = self._seq.get(task_key, 0) + 1
            error = new.error
            self._transitions.append((
                self.run_id, task_key, seq, new.type.value, new.attempt, new.message[:2000],
                error.type if error else None, error.traceback[-8000:] if error else None,
                new.timestamp, new.started_at, new.finished_at, self.attempt,
            ))

    def on_chunk(self, *, task_key: str, work: Any, summary: Any, error: Any, facts: Any = None) -> None:
        """A chunk row (what the work made final, by state: the facts the engine decided) and a row per
        item that did not succeed or was run again, keyed by its map index (a later row replaces it)."""
        job = work.job
        start, stop = (facts.start, facts.stop) if facts is not None else (job.start, job.start + job.size)
        row = (
            self.run_id, task_key, start, stop,
            summary.size if summary is not None else job.size, json.dumps(facts.counts if facts is not None else {}),
            summary.started_at if summary is not None else None,
            summary.finished_at if summary is not None else time.time(),
            str(error) if error is not None else (summary.errors[0][1] if summary.errors else None),
            self.attempt, facts.retried if facts is not None else 0,
            getattr(summary, "node", None),  # where it ran (a cluster's node id), when known
            getattr(summary, "behind", None),  # the map it ran fused behind, in the same worker call (core.fusion)
        )
        with self._lock:
            self._chunks.append(row)
            if facts is not None and facts.items:
                self._items.append((task_key, facts.items))

    def _rows(self, groups: list[tuple]) -> list[tuple]:
        """The items table's rows of buffered ``(task key, WorkFacts.items)``: made here, by the writer
        thread, not in the orchestrator's loop."""
        run_id, attempt = self.run_id, self.attempt
        return [
            (run_id, attempt, task_key, index, state, attempts, kind, (message or "")[:2000] or None,
             traceback[-8000:] if traceback else None)
            for task_key, items in groups
            for index, state, attempts, kind, message, traceback in items
        ]

    def on_report(self, *, work: Any, report: Any) -> None:
        records = getattr(report, "logs", ())
        if records:
            with self._lock:
                self._logs.extend((self.run_id, *record, self.attempt) for record in records)
        artifacts = getattr(report, "artifacts", ())
        if artifacts:
            with self._lock:
                self._artifacts.extend((self.run_id, self.attempt, *artifact) for artifact in artifacts)

    def on_log(self, *, run_id: str, records: list[tuple]) -> None:
        with self._lock:
            self._logs.extend((self.run_id, *record, self.attempt) for record in records)

    def _take(self) -> tuple[list, list, list, list, list, list]:
        """The buffered rows, emptying the buffers (the caller holds ``_lock``)."""
        runs = [self._run] if self._run is not None else []
        out = (runs, self._transitions, self._chunks, self._logs, self._rows(self._items), self._artifacts)
        self._run, self._transitions, self._chunks, self._logs, self._items, self._artifacts = None, [], [], [], [], []
        return out

    def _hold(self, runs: list, transitions: list, chunks: list, logs: list, items: list, artifacts: list) -> None:
        """Add a batch to the rows not written yet; beyond MAX_PENDING_ROWS of a kind the oldest go."""
        if runs:
            self._pending_run = runs[-1]  # INSERT OR REPLACE: only the latest row of the run matters
        dropped = 0
        for rows, new in zip(self._pending, (transitions, chunks, logs, items, artifacts)):
            rows.extend(new)
            excess = len(rows) - MAX_PENDING_ROWS
            if excess > 0:
                del rows[:excess]
                dropped += excess
        if dropped:
            if not self._dropped:
                logger.warning(
                    "rayflow: the history of run %s still cannot be written; "
                    "keeping only the newest %d rows of each kind", self.run_id, MAX_PENDING_ROWS,
                )
            self._dropped += dropped

    def pending_rows(self) -> int:
        """Rows recorded but not written yet (buffered, or held after a failed write)."""
        with self._lock:
            buffered = len(self._transitions) + len(self._chunks) + len(self._logs) + sum(len(g[1]) for g in self._items)
            buffered += len(self._artifacts)
            run = self._run is not None or self._pending_run is not None
        return buffered + sum(len(rows) for rows in self._pending) + run

    def flush(self) -> bool:
        """Write what was recorded, with what earlier failed writes held; True if nothing is left.

        A failed write never raises: its rows are kept for the next flush, and the failure is
        logged once (again only when a different one follows, or after the store recovered).
        """
        with self._write_lock:
            with self._lock:  # rows move from the buffers to the held ones at once: _spill sees all
                self._hold(*self._take())
            run, (transitions, chunks, logs, items, artifacts) = self._pending_run, self._pending
            if run is None and not (transitions or chunks or logs or items or artifacts):
                return True
            resend = self._graph is not None and self._graph_written != self.store.generation
            graphs = [(self.run_id, self._graph)] if run is not None and resend else []
            try:
                spilled = self._spilled if not self._applied else None  # rows kept in a file too:
                self.store.write(  # mark the file written in the same transaction
                    [run] if run is not None else [], transitions, chunks, logs, graphs, items=items,
                    applied=spilled.stem if spilled is not None else None, artifacts=artifacts,
                )
                self._applied = self._applied or spilled is not None
            except Exception as exc:  # noqa: BLE001 - any store failure: keep the rows, retry later
                problem = error_text(type(exc).__name__, str(exc))
                if problem != self._problem and not self._abandoned:
                    logger.warning(
                        "rayflow: cannot write the history of run %s (%s); keeping %d rows to retry",
                        self.run_id, problem, self.pending_rows(),
                    )
                self._problem = problem
                return False
            self._pending_run, self._pending = None, ([], [], [], [], [])
            if graphs:
                self._graph_written = self.store.generation  # after a move-aside in this write too
            elif self._graph_written is not None and self._graph_written != self.store.generation:
                self._resend_graph()  # the database it was in was moved aside (damaged) by this write
            if self._problem is not None:
                logger.info("rayflow: the history of run %s is written again", self.run_id)
                self._problem = None
            return True

    def _resend_graph(self) -> None:
        try:
            self.store.write([], [], [], [], [(self.run_id, self._graph)])
            self._graph_written = self.store.generation
        except Exception:  # noqa: BLE001 - tried again with the next write
            pass

    def _loop(self) -> None:
        try:
            self._write_all()
        finally:
            self._ended.set()

    def _write_all(self) -> None:
        if self.store.repair:
            self.store.write_pending()  # rows earlier runs' drivers could not write (a locked history)
        clock = self._clock
        while not clock.wait(self._stop, FLUSH_SECONDS):
            self.flush()
        # Closing: the last rows, retried until the deadline close() set (in the background
        # once close() has returned: a locked database may be released minutes later).
        while not self.flush():
            remaining = self._deadline - clock.now()
            if remaining <= 0 or self._abandoned:
                self._give_up()
                return
            clock.wait(None, min(FLUSH_SECONDS, remaining))
        if self._background:
            logger.warning("rayflow: the history of run %s is written after all", self.run_id)
        self._give_up()  # only rows dropped while held, if any
        with self._spill_lock:
            self._written.set()
            if self._spilled is not None:
                self._spilled.unlink(missing_ok=True)
                _LIVE_SPILLS.discard(self._spilled.stem)

    def _give_up(self) -> None:
        with self._lock:  # not _write_lock: a write blocked in SQLite holds that one
            if self._gave_up:
                return
            self._gave_up = True
        if self._spilled is not None:  # a later writer of this process may write them now
            _LIVE_SPILLS.discard(self._spilled.stem)
        lost = self._dropped + self.pending_rows()
        if lost and self._spilled is not None:
            logger.warning(
                "rayflow: %d rows of the history of run %s are kept in %s: the next run that opens this history "
                "writes them", lost - self._dropped, self.run_id, self._spilled,
            )
        elif lost:
            logger.warning(
                "rayflow: %d rows of the history of run %s were not written: the store kept failing%s",
                lost, self.run_id, f" ({self._problem})" if self._problem and self._abandoned else "",
            )

    def _spill(self) -> None:
        """Copy the rows not written yet to a file beside the history, so that they outlive this
        process (a driver that exits takes its actor and this thread along): the next writer to
        open the history writes them (``RunStore.write_pending``).  Removed once written here."""
        with self._spill_lock:
            if self._written.is_set():
                return
            with self._lock:  # the buffers; the held rows only change after a write returns
                run = self._run or self._pending_run
                rows = {
                    "runs": [run] if run is not None else [],
                    "transitions": self._pending[0] + self._transitions,
                    "chunks": self._pending[1] + self._chunks,
                    "logs": self._pending[2] + self._logs,
                    "items": self._pending[3] + self._rows(self._items),
                    "artifacts": self._pending[4] + self._artifacts,
                    "graphs": [(self.run_id, self._graph)] if run is not None and self._graph is not None else [],
                }
            try:
                name = f"{self.run_id}-{self.attempt}@{socket.gethostname()}:{os.getpid()}"
                _LIVE_SPILLS.add(name)
                self._spilled = self.store.spill(name, rows)
            except OSError as exc:
                logger.warning("rayflow: cannot keep the unwritten history of run %s in a file: %s", self.run_id, exc)

    def close(self, timeout: float | None = None, background: float | None = None) -> None:
        """Write the last rows, waiting ``timeout`` seconds (CLOSE_SECONDS) at most; never raises.

        The writer thread does the writing, so a write blocked in SQLite (a locked database
        waits out its busy timeout) holds up only that thread.  Rows still unwritten when
        close() returns are retried by that thread in the background for ``background``
        seconds (BACKGROUND_SECONDS) more, then given up, and how many is logged.
        """
        timeout = CLOSE_SECONDS if timeout is None else timeout
        background = BACKGROUND_SECONDS if background is None else background
        self._deadline = self._clock.now() + max(timeout, background)
        self._stop.set()
        self.start_writer()
        if self._clock.wait(self._written, timeout):
            return
        if background > timeout:
            self._background = True
            self._spill()
            logger.warning(
                "rayflow: the history of run %s cannot be written yet (%s): %d rows kept in %s and retried in the "
                "background for up to %.0f s", self.run_id, self._problem or "a write is blocked", self.pending_rows(),
                self._spilled, background,
            )
            return
        if not self._clock.wait(self._ended, 1.0):  # the last attempt may start just before the deadline
            self._abandoned = True  # blocked in a write: it stops retrying once that returns
            self._give_up()
