"""The run history: runs, their tasks' state transitions, and map chunk summaries.

The orchestrating actor writes it through a ``HistoryRecorder``, which
buffers rows and writes them in batches from a thread of its own, so a run
with a million-item map writes per-chunk rows, never per-item rows, and the
flow never waits on the disk.  A store that fails (locked, full, broken)
never fails or hangs a run: the rows are kept and retried, within bounds,
and what could not be written by the run's end is logged as lost.  Anyone
on the machine reads it with a ``RunStore`` (``rayflow runs``, ``rayflow
show``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import socket
import sqlite3
import threading
import time
from collections.abc import Mapping
from typing import Any

from rayflow.core.parameters import is_secret
from rayflow.engine import columns as C
from rayflow.engine.observers import RunObserver
from rayflow.exceptions import DuplicateRunError
from rayflow.paths import check_run_id, under_root
from rayflow.presentation import UNFINISHED  # a run recorded before it ends
from rayflow.states import State

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, flow TEXT NOT NULL, params TEXT NOT NULL, state TEXT NOT NULL,
    message TEXT, started_at REAL, finished_at REAL, trace_id TEXT, tasks TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS run_attempts (
    run_id TEXT NOT NULL, attempt INTEGER NOT NULL, state TEXT NOT NULL, message TEXT,
    started_at REAL, finished_at REAL, trace_id TEXT, PRIMARY KEY (run_id, attempt)
);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs(started_at);
CREATE TABLE IF NOT EXISTS transitions (
    run_id TEXT NOT NULL, task_key TEXT NOT NULL, seq INTEGER NOT NULL, state TEXT NOT NULL,
    attempt INTEGER, message TEXT, error_type TEXT, traceback TEXT, at REAL, started_at REAL, finished_at REAL,
    run_attempt INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS transitions_by_run ON transitions(run_id, task_key, seq);
CREATE TABLE IF NOT EXISTS chunks (
    run_id TEXT NOT NULL, task_key TEXT NOT NULL, start INTEGER, stop INTEGER, items INTEGER,
    counts TEXT, started_at REAL, finished_at REAL, error TEXT, run_attempt INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS chunks_by_run ON chunks(run_id, task_key);
CREATE TABLE IF NOT EXISTS logs (
    run_id TEXT NOT NULL, at REAL, level TEXT, message TEXT, task_key TEXT, map_index INTEGER,
    trace_id TEXT, span_id TEXT, run_attempt INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS logs_by_run ON logs(run_id, task_key);
CREATE TABLE IF NOT EXISTS graphs (run_id TEXT PRIMARY KEY, graph TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS schedules (
    schedule_id TEXT PRIMARY KEY, flow TEXT NOT NULL, target TEXT, spec TEXT NOT NULL,
    evaluated_until REAL, next_fire REAL, updated_at REAL
);
CREATE TABLE IF NOT EXISTS scheduled_runs (
    schedule_id TEXT NOT NULL, scheduled_for REAL NOT NULL, run_id TEXT, outcome TEXT NOT NULL, at REAL,
    server TEXT, PRIMARY KEY (schedule_id, scheduled_for)
);
CREATE INDEX IF NOT EXISTS scheduled_runs_by_run ON scheduled_runs(run_id);
CREATE INDEX IF NOT EXISTS scheduled_runs_held ON scheduled_runs(schedule_id)
    WHERE outcome IN ('claimed', 'starting', 'queued', 'waiting (max_concurrent)');
CREATE TABLE IF NOT EXISTS servers (
    server_id TEXT PRIMARY KEY, host TEXT, pid INTEGER, started_at REAL, heartbeat_at REAL, stopped_at REAL,
    schedules TEXT
);
CREATE TABLE IF NOT EXISTS pending_applied (name TEXT PRIMARY KEY, at REAL);
CREATE TABLE IF NOT EXISTS limits (name TEXT PRIMARY KEY, slots INTEGER NOT NULL, per_second REAL, updated_at REAL);
"""

# Columns added since the first schema: (table, column, definition), added to an older database.
ADDED_COLUMNS = (
    ("runs", "attempt", "INTEGER NOT NULL DEFAULT 1"),
    ("transitions", "run_attempt", "INTEGER NOT NULL DEFAULT 1"),
    ("chunks", "run_attempt", "INTEGER NOT NULL DEFAULT 1"),
    ("logs", "run_attempt", "INTEGER NOT NULL DEFAULT 1"),
    ("scheduled_runs", "server", "TEXT"),
)

FLUSH_SECONDS = 0.5
CLOSE_SECONDS = 3.0  # at a run's end, how long its last rows may wait for a failing store
BACKGROUND_SECONDS = 300.0  # then how long the writer thread retries them on its own
MAX_PENDING_ROWS = 100_000  # per kind of row, held for a retry while the store fails

logger = logging.getLogger(__name__)


def rayflow_home(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    environ = os.environ if environ is None else environ
    return pathlib.Path(environ.get("RAYFLOW_HOME") or pathlib.Path.home() / ".rayflow")


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


def driver_alive(graph: Mapping[str, Any]) -> bool | None:
    """Whether the driver that ran a run (recorded with its graph) is a live process: known only
    for a driver of this host, None elsewhere.  A dead driver took its actor, and its run, along."""
    driver = graph.get("driver") or {}
    pid, host = driver.get("pid"), driver.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def driver_is_gone(graph: Mapping[str, Any]) -> bool:
    return driver_alive(graph) is False


CRASHED = "CRASHED"


def shown_state(recorded: str, graph: Mapping[str, Any] | None) -> str:
    """A run's state as every reader shows it and filters it: the recorded one, except that an
    unfinished run whose driver (recorded with its graph) is gone is CRASHED, since that driver
    took its actor, and so the run, along.  The one rule: ``runs``, ``show``, the UI, its
    filters and ``schedules`` all read a run's state through it."""
    if recorded in UNFINISHED and graph is not None and driver_is_gone(graph):
        return CRASHED
    return recorded


def redact_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as JSON-safe values, with SecretStr/SecretBytes as ***."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if is_secret(value):
            out[name] = "***"
        else:
            try:
                json.dumps(value)
                out[name] = value
            except (TypeError, ValueError):
                out[name] = repr(value)[:200]
    return out


SCHEMA_VERSION = 5  # PRAGMA user_version once SCHEMA and ADDED_COLUMNS are in: opening skips the writes


def is_damaged(exc: BaseException) -> bool:
    """A database file SQLite cannot read ("file is not a database", "malformed"), not one that
    is only busy or locked (OperationalError) or a constraint (IntegrityError)."""
    return type(exc) is sqlite3.DatabaseError or (
        isinstance(exc, sqlite3.DatabaseError) and ("malformed" in str(exc) or "not a database" in str(exc))
    )


_LIVE_SPILLS: set[str] = set()  # files of rows this process's writer threads still retry


def _orphaned(name: str, claimer: str, path: pathlib.Path) -> bool:
    """Whether the kept rows ``name`` (``<run>-<attempt>@<host>:<pid>``; claimed by ``claimer``,
    a pid, if not empty) belong to no live writer: one of this process still retrying them, or
    another live process of this host, keeps them; a file of another host, for a while."""
    if name in _LIVE_SPILLS:
        return False
    host, _, pid = name.rpartition("@")[2].partition(":")
    owner = claimer or pid
    if host == socket.gethostname():
        return not (owner.isdigit() and int(owner) != os.getpid() and driver_alive({"driver": {"host": host, "pid": int(owner)}}))
    return time.time() - path.stat().st_mtime > BACKGROUND_SECONDS + 60


class RunStore:
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
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))  # owner-only, before sqlite opens it
        with self._connect() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return  # nothing to create: a read, which a lock held by a writer does not block
            db.executescript(SCHEMA)
            for table, column, definition in ADDED_COLUMNS:  # a history written by an older rayflow
                if column not in {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                    if table == "runs":  # its runs were first attempts
                        db.execute(
                            "INSERT OR IGNORE INTO run_attempts SELECT run_id, 1, state, message, started_at, "
                            "finished_at, trace_id FROM runs"
                        )
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def pending_folder(self) -> pathlib.Path:
        return self.home / "history-pending"

    def spill(self, name: str, rows: Mapping[str, list]) -> pathlib.Path:
        """Rows a run could not write, as one JSON file (owner-only) for a later writer.  Its
        name holds the run id: a name that would leave the folder is refused (UnsafePathError)."""
        path = pathlib.Path(under_root(str(self.pending_folder), f"{name}.json"))
        self.pending_folder.mkdir(mode=0o700, exist_ok=True)
        partial = path.with_suffix(".partial")
        fd = os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(rows, fh)
        os.replace(partial, path)
        return path

    def write_pending(self) -> int:
        """Write the rows earlier runs left in files (their history was locked) once no live
        writer owns them; the rows written.  Each file is claimed by renaming it first, and
        recorded in ``pending_applied`` in the same transaction as its rows: written once."""
        written = 0
        folder = self.pending_folder
        for path in sorted(folder.glob("*.json*")) if folder.is_dir() else []:
            name, _, claimer = path.name.partition(".json")
            if not _orphaned(name, claimer.removeprefix(".claimed-"), path):
                continue
            claimed = folder / f"{name}.json.claimed-{os.getpid()}"
            try:
                os.rename(path, claimed)  # atomic: one writer wins it
            except FileNotFoundError:
                continue
            try:
                rows = json.loads(claimed.read_text())
                self._write(
                    *(list(map(tuple, rows[k])) for k in ("runs", "transitions", "chunks", "logs", "graphs")),
                    timeout=1.0, applied=name,
                )
            except sqlite3.IntegrityError:  # written already (its writer wrote them, then died)
                rows = {}
            except (OSError, ValueError, KeyError, sqlite3.Error) as exc:
                logger.warning("rayflow: cannot write the history rows kept in %s: %s", path, exc)
                with contextlib.suppress(OSError):
                    os.rename(claimed, folder / f"{name}.json")
                continue
            claimed.unlink(missing_ok=True)
            written += sum(len(v) for v in rows.values())
        return written

    def _move_aside(self, exc: BaseException, inode: int) -> None:
        """Rename the damaged database (the one with ``inode``: another process may have moved
        it and started a new one already) to history.db.damaged-<time>, and start a new one."""
        aside = self.path.with_name(f"history.db.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        try:
            if os.stat(self.path).st_ino == inode:
                os.rename(self.path, aside)
                for suffix in ("-wal", "-shm"):
                    extra = self.path.with_name(self.path.name + suffix)
                    if extra.exists():
                        os.rename(extra, aside.with_name(aside.name + suffix))
                logger.warning(
                    "rayflow: the run history at %s is damaged (%s): moved it to %s and started a new one",
                    self.path, exc, aside,
                )
        except FileNotFoundError:
            pass  # moved by another process
        self.generation += 1  # writers resend what the new database lacks (a run's graph)
        self._create()

    def _connect(self, timeout: float = 10.0) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=timeout)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # with WAL: no corruption, far fewer fsyncs
        return db

    # -- writing -------------------------------------------------------------

    def write(
        self, runs: list[tuple], transitions: list[tuple], chunks: list[tuple], logs: list[tuple] = (), graphs: list[tuple] = (),
        applied: str | None = None,
    ) -> None:
        try:
            if not self.path.exists():  # moved aside by another process
                self._create()
            inode = os.stat(self.path).st_ino
            self._write(runs, transitions, chunks, logs, graphs, applied=applied)
        except sqlite3.DatabaseError as exc:
            if not (self.repair and is_damaged(exc)):
                raise
            self._move_aside(exc, inode)
            self._write(runs, transitions, chunks, logs, graphs, applied=applied)

    def _write(
        self, runs: list[tuple], transitions: list[tuple], chunks: list[tuple], logs: list[tuple], graphs: list[tuple],
        timeout: float = 10.0, applied: str | None = None,
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
                db.executemany("INSERT INTO chunks VALUES (?,?,?,?,?,?,?,?,?,?)", chunks)

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

    # -- reading -------------------------------------------------------------

    def runs(
        self, *, flow: str | None = None, state: str | None = None, limit: int = 20, since: float | None = None,
        offset: int = 0,
    ) -> list[dict]:
        """Runs newest first, their states as ``shown_state`` decides, filtered on that: ``limit`` of
        them after the first ``offset`` (a page reads only its rows, but for a filter on an unfinished
        or CRASHED state, which reads the unfinished runs until the page is full)."""
        query = (  # a scheduled run: its schedule and scheduled time (None for the others)
            "SELECT runs.*, s.schedule_id AS schedule_id, s.scheduled_for AS scheduled_for FROM runs "
            "LEFT JOIN scheduled_runs AS s ON s.run_id = runs.run_id WHERE 1=1"
        )
        args: list[Any] = []
        state = state.upper() if state else None
        if flow:
            query, args = query + " AND runs.flow = ?", [*args, flow]
        if state:  # a CRASHED run may be recorded unfinished; an unfinished one may read CRASHED
            recorded = (state, *UNFINISHED) if state == CRASHED else (state,)
            query, args = query + f" AND runs.state IN ({','.join('?' * len(recorded))})", [*args, *recorded]
        if since is not None:
            query, args = query + " AND runs.started_at >= ?", [*args, since]
        query += " ORDER BY runs.started_at DESC"
        decided = state in (CRASHED, *UNFINISHED)  # read, then filtered: no LIMIT in SQL
        if not decided:
            query, args = query + " LIMIT ? OFFSET ?", [*args, limit, offset]
        skip = offset if decided else 0
        rows: list[dict] = []
        with self._connect() as db:
            for found in db.execute(query, args):  # newest first, until ``limit`` match (< 0: all, as SQL's)
                if 0 <= limit <= len(rows):
                    break
                row = self._run_row(found)
                row["state"] = self._shown(db, row["run_id"], row["state"])
                if state and row["state"] != state:
                    continue
                if skip:
                    skip -= 1
                    continue
                rows.append(row)
        return rows

    def _shown(self, db: sqlite3.Connection, run_id: str | None, recorded: str | None) -> str | None:
        """``shown_state`` of a recorded run, its graph read only when it is unfinished."""
        if recorded not in UNFINISHED or run_id is None:
            return recorded
        graph = db.execute("SELECT graph FROM graphs WHERE run_id = ?", [run_id]).fetchone()
        return shown_state(recorded, json.loads(graph["graph"]) if graph is not None else None)

    def run(self, run_id: str) -> dict | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT runs.*, s.schedule_id AS schedule_id, s.scheduled_for AS scheduled_for FROM runs "
                "LEFT JOIN scheduled_runs AS s ON s.run_id = runs.run_id WHERE runs.run_id = ?", [run_id],
            ).fetchone()
            if row is None:
                return None
            run = self._run_row(row)
            graph = db.execute("SELECT graph FROM graphs WHERE run_id = ?", [run_id]).fetchone()
            run["graph"] = json.loads(graph["graph"]) if graph is not None else None
            run["state"] = shown_state(run["state"], run["graph"])
            attempt = run["attempt"]  # the latest attempt's tasks and chunks; every attempt's outcome
            run["transitions"] = [dict(r) for r in db.execute(
                "SELECT * FROM transitions WHERE run_id = ? AND run_attempt = ? ORDER BY rowid", [run_id, attempt])]
            run["chunks"] = [dict(r) | {"counts": json.loads(r["counts"] or "{}")} for r in db.execute(
                "SELECT * FROM chunks WHERE run_id = ? AND run_attempt = ? ORDER BY task_key, start", [run_id, attempt])]
            run["attempts"] = [dict(r) for r in db.execute(
                "SELECT attempt, state, message, started_at, finished_at, trace_id FROM run_attempts "
                "WHERE run_id = ? ORDER BY attempt", [run_id])]
            if run["attempts"] and run["attempts"][-1]["attempt"] == attempt:
                run["attempts"][-1]["state"] = run["state"]  # CRASHED where the run row says so
        return run

    def run_state(self, run_id: str) -> str | None:
        """The recorded state of ``run_id`` (None: no such run), read without its rows."""
        with self._connect() as db:
            row = db.execute("SELECT state FROM runs WHERE run_id = ?", [run_id]).fetchone()
        return row["state"] if row is not None else None

    def transitions_after(self, run_id: str, after: int = 0) -> list[dict]:
        """The task transitions of the run's latest attempt recorded after row ``after``, in
        order (``row`` is the next ``after``): to follow a live run's state changes."""
        with self._connect() as db:
            return [dict(r) for r in db.execute(
                "SELECT t.rowid AS row, t.task_key, t.state, t.attempt, t.message, t.at FROM transitions AS t "
                "JOIN runs ON runs.run_id = t.run_id AND runs.attempt = t.run_attempt "
                "WHERE t.run_id = ? AND t.rowid > ? ORDER BY t.rowid", [run_id, after])]

    def logs(self, run_id: str, *, task: str | None = None, after: int = 0) -> list[dict]:
        """Log records of a run in order; ``after`` a row number, to follow a live run."""
        query, args = "SELECT rowid AS row, * FROM logs WHERE run_id = ? AND rowid > ?", [run_id, after]
        if task:
            query, args = query + " AND task_key = ?", [*args, task]
        with self._connect() as db:
            return [dict(r) for r in db.execute(query + " ORDER BY rowid", args)]

    @staticmethod
    def _run_row(row: sqlite3.Row) -> dict:
        out = dict(row)
        out["params"] = json.loads(out["params"])
        out["tasks"] = json.loads(out["tasks"])
        return out


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
    ):
        self.store = store
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
        self._run: tuple | None = None
        self._lock = threading.Lock()  # the buffers, filled by the orchestrator's calls of this observer's hooks
        # Rows taken from the buffers but not written yet (a write failed): retried on the next
        # flush, bounded by MAX_PENDING_ROWS per kind.  Only flush() touches them, under _write_lock.
        self._pending_run: tuple | None = None
        self._pending: tuple[list, list, list] = ([], [], [])  # transitions, chunks, logs
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
        self._thread = threading.Thread(target=self._loop, name=f"history-{run_id}", daemon=True)
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

    def on_chunk(self, *, task_key: str, work: Any, summary: Any, error: Any) -> None:
        job = work.job
        counts = {C.CODES[code].value: n for code, n in summary.counts.items()} if summary is not None else {}
        if summary is not None and summary.cached:  # cached items are SUCCESS to the engine, told apart here
            counts["SUCCESS"] -= summary.cached
            counts["CACHED"] = summary.cached
        row = (
            self.run_id, task_key, job.start, job.start + job.size,
            summary.size if summary is not None else job.size, json.dumps(counts),
            summary.started_at if summary is not None else None,
            summary.finished_at if summary is not None else time.time(),
            str(error) if error is not None else (summary.errors[0][1] if summary.errors else None),
            self.attempt,
        )
        with self._lock:
            self._chunks.append(row)

    def on_report(self, *, work: Any, report: Any) -> None:
        records = getattr(report, "logs", ())
        if records:
            with self._lock:
                self._logs.extend((self.run_id, *record, self.attempt) for record in records)

    def _take(self) -> tuple[list, list, list, list]:
        """The buffered rows, emptying the buffers (the caller holds ``_lock``)."""
        runs = [self._run] if self._run is not None else []
        out = (runs, self._transitions, self._chunks, self._logs)
        self._run, self._transitions, self._chunks, self._logs = None, [], [], []
        return out

    def _hold(self, runs: list, transitions: list, chunks: list, logs: list) -> None:
        """Add a batch to the rows not written yet; beyond MAX_PENDING_ROWS of a kind the oldest go."""
        if runs:
            self._pending_run = runs[-1]  # INSERT OR REPLACE: only the latest row of the run matters
        dropped = 0
        for rows, new in zip(self._pending, (transitions, chunks, logs)):
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
            buffered = len(self._transitions) + len(self._chunks) + len(self._logs)
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
            run, (transitions, chunks, logs) = self._pending_run, self._pending
            if run is None and not (transitions or chunks or logs):
                return True
            resend = self._graph is not None and self._graph_written != self.store.generation
            graphs = [(self.run_id, self._graph)] if run is not None and resend else []
            try:
                spilled = self._spilled if not self._applied else None  # rows kept in a file too:
                self.store.write(  # mark the file written in the same transaction
                    [run] if run is not None else [], transitions, chunks, logs, graphs,
                    applied=spilled.stem if spilled is not None else None,
                )
                self._applied = self._applied or spilled is not None
            except Exception as exc:  # noqa: BLE001 - any store failure: keep the rows, retry later
                problem = f"{type(exc).__name__}: {exc}"
                if problem != self._problem and not self._abandoned:
                    logger.warning(
                        "rayflow: cannot write the history of run %s (%s); keeping %d rows to retry",
                        self.run_id, problem, self.pending_rows(),
                    )
                self._problem = problem
                return False
            self._pending_run, self._pending = None, ([], [], [])
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
        if self.store.repair:
            self.store.write_pending()  # rows earlier runs' drivers could not write (a locked history)
        while not self._stop.wait(FLUSH_SECONDS):
            self.flush()
        # Closing: the last rows, retried until the deadline close() set (in the background
        # once close() has returned: a locked database may be released minutes later).
        while not self.flush():
            remaining = self._deadline - time.monotonic()
            if remaining <= 0 or self._abandoned:
                self._give_up()
                return
            time.sleep(min(FLUSH_SECONDS, remaining))
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
        self._deadline = time.monotonic() + max(timeout, background)
        self._stop.set()
        if self._written.wait(timeout):
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
        self._thread.join(1.0)  # the last attempt may start just before the deadline
        if self._thread.is_alive():
            self._abandoned = True  # blocked in a write: it stops retrying once that returns
            self._give_up()
