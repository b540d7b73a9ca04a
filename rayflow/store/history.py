"""The run history: runs, their tasks' state transitions, map chunk and item facts, logs.

``RunStore`` is the database under ``RAYFLOW_HOME``, put together from its parts: the schema
and its migration (store.schema), recovery of a damaged file and of rows kept in spill files
(store.recovery), the reads (store.queries), and here the writes.  The orchestrating actor
writes through a ``HistoryRecorder`` (store.recorder), which buffers rows and writes them in
batches from a thread of its own: per chunk work, never per item, except one row per map item
that did not succeed or was run again.  A store that fails never fails or hangs a run.  Anyone
on the machine reads it with a ``RunStore`` (``rayflow runs``, ``rayflow show``, the UI).
This module keeps the names other modules import from it.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any

from rayflow.exceptions import DuplicateRunError
from rayflow.paths import check_run_id
from rayflow.store.artifacts import ArtifactQueries, write_artifacts
from rayflow.store.map_queries import TaskQueries
from rayflow.store.queries import CRASHED, RUN_SELECT, Queries
from rayflow.store.recovery import (
    _LIVE_SPILLS,
    BACKGROUND_SECONDS,
    Recovery,
    driver_alive,
    driver_is_gone,
)
from rayflow.store.schema import (
    ADDED_COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    UNFINISHED,
    create_private,
    is_damaged,
    migrate,
    rayflow_home,
    redact_params,
)

__all__ = [
    "ADDED_COLUMNS",
    "BACKGROUND_SECONDS",
    "CLOSE_SECONDS",
    "CRASHED",
    "FLUSH_SECONDS",
    "MAX_PENDING_ROWS",
    "RUN_SELECT",
    "SCHEMA",
    "SCHEMA_VERSION",
    "UNFINISHED",
    "_LIVE_SPILLS",
    "HistoryRecorder",
    "RunStore",
    "driver_alive",
    "driver_is_gone",
    "is_damaged",
    "rayflow_home",
    "redact_params",
    "refuse_taken_run_id",
]

# The recorder's names, imported on first use (PEP 562): it is the orchestrator's writer (it
# brings the engine's protocol, asyncio and pydantic), which `rayflow runs` and `show` never use.
_RECORDER_NAMES = ("CLOSE_SECONDS", "FLUSH_SECONDS", "MAX_PENDING_ROWS", "HistoryRecorder")


def __getattr__(name: str) -> Any:
    if name in _RECORDER_NAMES:
        from rayflow.store import recorder

        return getattr(recorder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Called before this process opens the history: each waits for the rows of runs whose end
# this process was told of before they were written (runtime.driver.history_wait registers
# one: a Ray run's answer does not wait for its actor's last write).
BEFORE_OPEN: list[Callable[[], None]] = []

_RESERVED: set[str] = set()  # run ids this process recorded PENDING before their run starts (RunStore.reserve)


def refuse_taken_run_id(options: Any) -> None:
    """Where both runners start a run: a run given its id (``run_id=``, ``rayflow run --run-id``)
    must follow the rule of rayflow.paths (checked again here, for options that were never
    validated) and must not reuse one the history has: its rows would mix with the earlier
    run's.  A resume's later attempt reuses it on purpose."""
    run_id = getattr(options, "run_id", None)
    if run_id is not None:
        check_run_id(run_id)
    if not run_id or getattr(options, "run_attempt", 1) > 1:
        return
    if run_id in _RESERVED:  # recorded by this process for this very run: taken by it now
        _RESERVED.discard(run_id)
        return
    try:
        store = RunStore(rayflow_home())
        taken = store.run_state(run_id)
    except Exception:  # noqa: BLE001 - a history that cannot be read never stops a run
        return
    if taken is not None:
        raise DuplicateRunError(
            f"run id {run_id!r} is taken: the run history at {store.path} has a run {run_id} ({taken}); "
            f"choose another id, or resume it: rayflow resume {run_id}",
            run_id=run_id,
        )



def use_wal(db: sqlite3.Connection, timeout: float) -> None:
    """Put the database in WAL mode, which it keeps.  Switching needs an exclusive lock, and two
    connections switching at once are a deadlock SQLite answers at once with "locked" (its busy
    timeout does not wait for it): a file already in WAL is left alone, and the switch is retried."""
    deadline = time.monotonic() + timeout
    while db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class RunStore(Recovery, Queries, ArtifactQueries, TaskQueries):
    """The history database under ``home``.  ``repair=True`` (the run's writer) moves a damaged
    database aside and starts a new one; readers report it (the CLI in one line)."""

    def __init__(self, home: pathlib.Path | str | None = None, *, repair: bool = False):
        self.home = pathlib.Path(home) if home is not None else rayflow_home()
        self.repair = repair
        if self.home.exists() and not self.home.is_dir():
            raise NotADirectoryError(f"{self.home} is a file, not a directory")
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)  # owner-only when rayflow makes it
        self.path = self.home / "history.db"
        self.generation = 0  # databases moved aside by this store
        inode = self.path.stat().st_ino if self.path.exists() else None
        try:
            self._create()
        except sqlite3.DatabaseError as exc:
            if not (repair and is_damaged(exc)):
                raise
            self._move_aside(exc, inode if inode is not None else self.path.stat().st_ino)

    def _create(self) -> None:
        if not self.path.exists():
            create_private(self.path)  # owner-only, before sqlite opens it
        with self._connect() as db:
            migrate(db)

    def _connect(self, timeout: float = 10.0) -> sqlite3.Connection:
        for settle in BEFORE_OPEN:
            settle()
        db = sqlite3.connect(self.path, timeout=timeout)
        db.row_factory = sqlite3.Row
        use_wal(db, timeout)
        db.execute("PRAGMA synchronous=NORMAL")  # with WAL: no corruption, far fewer fsyncs
        return db

    # -- writing -------------------------------------------------------------

    def write(
        self, runs: list[tuple], transitions: list[tuple], chunks: list[tuple], logs: list[tuple] = (), graphs: list[tuple] = (),
        applied: str | None = None, items: list[tuple] = (), artifacts: list[tuple] = (),
    ) -> None:
        try:
            if not self.path.exists():  # moved aside by another process
                self._create()
            inode = os.stat(self.path).st_ino
            self._write(runs, transitions, chunks, logs, graphs, applied=applied, items=items, artifacts=artifacts)
        except sqlite3.DatabaseError as exc:
            if not (self.repair and is_damaged(exc)):
                raise
            self._move_aside(exc, inode)
            self._write(runs, transitions, chunks, logs, graphs, applied=applied, items=items, artifacts=artifacts)

    def _write(
        self, runs: list[tuple], transitions: list[tuple], chunks: list[tuple], logs: list[tuple], graphs: list[tuple],
        timeout: float = 10.0, applied: str | None = None, items: list[tuple] = (), artifacts: list[tuple] = (),
    ) -> None:
        with self._connect(timeout) as db:
            if applied is not None:  # rows kept in a file: an IntegrityError if they are in already
                db.execute("INSERT INTO pending_applied VALUES (?,?)", [applied, time.time()])
            if graphs:
                db.executemany("INSERT OR REPLACE INTO graphs VALUES (?,?)", graphs)
            if logs:
                db.executemany("INSERT INTO logs VALUES (?,?,?,?,?,?,?,?,?)", logs)
            if runs:
                db.executemany("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)", runs)
                db.executemany(  # each attempt's outcome: (run id, attempt, state, message, times, trace)
                    "INSERT OR REPLACE INTO run_attempts VALUES (?,?,?,?,?,?,?)",
                    [(r[0], r[9], r[3], r[4], r[5], r[6], r[7]) for r in runs],
                )
            if transitions:
                db.executemany("INSERT INTO transitions VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", transitions)
            if chunks:
                # a row without its node or fused (kept from before chunks had them): NULL
                db.executemany("INSERT INTO chunks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                               [(*row, *(None,) * (13 - len(row))) for row in chunks])
            if items:  # one row per item: a later row of it (run again) replaces the earlier one
                db.executemany("INSERT OR REPLACE INTO items VALUES (?,?,?,?,?,?,?,?,?)", items)
            if artifacts:  # keyed ones numbered as they go in (store.artifacts)
                write_artifacts(db, artifacts)

    def reserve(self, run_id: str, flow: str, params: Mapping[str, Any], message: str) -> None:
        """Record a run PENDING before it starts in this process, so its id is in the history at
        once (the UI's run now); its run then records over it.  Its graph names this process as
        its driver: if the process dies first, readers see it CRASHED."""
        now = time.time()
        driver = {"host": socket.gethostname(), "pid": os.getpid()}
        with self._connect() as db:
            db.execute(  # an IntegrityError if the id is taken
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)",
                [run_id, flow, json.dumps(redact_params(params)), "PENDING", message, now, None, None, "[]", 1],
            )
            db.execute("INSERT OR IGNORE INTO graphs VALUES (?,?)", [run_id, json.dumps({"flow": flow, "nodes": [], "driver": driver})])
        _RESERVED.add(run_id)

    def mark_ended(
        self, run_id: str, state: str, *, flow: str, params: Mapping[str, Any], tasks: list[str], attempt: int,
        message: str, graph: Mapping[str, Any] | None = None, timeout: float = 2.0,
    ) -> None:
        """Record an unfinished run as ended (CRASHED, CANCELLED) when its orchestrating actor
        cannot (it died, or is gone with Ray).  A run the actor never got to record is recorded
        here; a run it recorded as finished is left as it is."""
        now = time.time()
        with self._connect(timeout) as db:
            db.execute(
                "INSERT OR IGNORE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)",
                [run_id, flow, json.dumps(redact_params(params)), "PENDING", None, now, None, None, json.dumps(tasks), attempt],
            )
            db.execute(
                f"UPDATE runs SET state = ?, message = ?, finished_at = ?, attempt = ? "
                f"WHERE run_id = ? AND (state IN {UNFINISHED} OR attempt < ?)", [state, message, now, attempt, run_id, attempt],
            )
            db.execute(
                "INSERT OR REPLACE INTO run_attempts SELECT run_id, attempt, state, message, started_at, finished_at, "
                "trace_id FROM runs WHERE run_id = ? AND attempt = ?", [run_id, attempt],
            )
            if graph is not None:  # a run its actor never recorded can still be resumed
                db.execute("INSERT OR IGNORE INTO graphs VALUES (?,?)", [run_id, json.dumps(graph)])
