"""The history database's schema, and its migration from an older rayflow's file.

A new table or column goes in ``SCHEMA`` (``CREATE ... IF NOT EXISTS``) or, for a
table that existed before, in ``ADDED_COLUMNS``; ``SCHEMA_VERSION`` is raised with it
so an older file is brought up to date once, on its first open (``migrate``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import sqlite3
import tempfile
from collections.abc import Mapping
from typing import Any

from rayflow.presentation import UNFINISHED  # a run recorded before it ends; re-exported

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
CREATE INDEX IF NOT EXISTS runs_unfinished ON runs(state) WHERE state IN ('PENDING', 'RUNNING');
CREATE INDEX IF NOT EXISTS runs_by_state ON runs(state, started_at, flow);
CREATE INDEX IF NOT EXISTS runs_by_flow ON runs(flow, started_at, state, finished_at);
CREATE TABLE IF NOT EXISTS transitions (
    run_id TEXT NOT NULL, task_key TEXT NOT NULL, seq INTEGER NOT NULL, state TEXT NOT NULL,
    attempt INTEGER, message TEXT, error_type TEXT, traceback TEXT, at REAL, started_at REAL, finished_at REAL,
    run_attempt INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS transitions_by_run ON transitions(run_id, task_key, seq);
CREATE TABLE IF NOT EXISTS chunks (
    run_id TEXT NOT NULL, task_key TEXT NOT NULL, start INTEGER, stop INTEGER, items INTEGER,
    counts TEXT, started_at REAL, finished_at REAL, error TEXT, run_attempt INTEGER NOT NULL DEFAULT 1,
    retried INTEGER NOT NULL DEFAULT 0, node TEXT, fused TEXT
);
CREATE INDEX IF NOT EXISTS chunks_by_run ON chunks(run_id, task_key);
CREATE TABLE IF NOT EXISTS items (
    run_id TEXT NOT NULL, run_attempt INTEGER NOT NULL, task_key TEXT NOT NULL, item INTEGER NOT NULL,
    state TEXT NOT NULL, attempts INTEGER, error_type TEXT, message TEXT, traceback TEXT,
    PRIMARY KEY (run_id, run_attempt, task_key, item)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_by_error ON items(run_id, run_attempt, task_key, error_type, item, state);
CREATE TABLE IF NOT EXISTS logs (
    run_id TEXT NOT NULL, at REAL, level TEXT, message TEXT, task_key TEXT, map_index INTEGER,
    trace_id TEXT, span_id TEXT, run_attempt INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS logs_by_run ON logs(run_id, task_key);
CREATE INDEX IF NOT EXISTS logs_by_item ON logs(run_id, task_key, map_index) WHERE map_index IS NOT NULL;
CREATE INDEX IF NOT EXISTS logs_in_order ON logs(run_id);  -- a run's last log lines, newest first, without a sort
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
CREATE TABLE IF NOT EXISTS artifacts (
    artifact_id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, run_attempt INTEGER NOT NULL DEFAULT 1, at REAL,
    kind TEXT NOT NULL, key TEXT, task_key TEXT, map_index INTEGER, summary TEXT, data TEXT NOT NULL, image TEXT,
    version INTEGER, latest INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS artifacts_by_run ON artifacts(run_id);
CREATE INDEX IF NOT EXISTS artifacts_by_task ON artifacts(run_id, task_key);
CREATE INDEX IF NOT EXISTS artifacts_by_key ON artifacts(key, version) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS artifacts_latest ON artifacts(at, artifact_id) WHERE latest = 1;
CREATE TABLE IF NOT EXISTS limits (name TEXT PRIMARY KEY, slots INTEGER NOT NULL, per_second REAL, updated_at REAL);
CREATE TABLE IF NOT EXISTS sla_misses (
    run_id TEXT NOT NULL, kind TEXT NOT NULL, flow TEXT NOT NULL, schedule_id TEXT, scheduled_for REAL,
    at REAL NOT NULL, message TEXT, PRIMARY KEY (run_id, kind)
);
CREATE INDEX IF NOT EXISTS sla_misses_by_schedule ON sla_misses(schedule_id, at);
CREATE TABLE IF NOT EXISTS pauses (
    run_id TEXT NOT NULL, task_key TEXT NOT NULL, map_index INTEGER NOT NULL DEFAULT -1, message TEXT,
    schema TEXT, timeout REAL, paused_at REAL, decision TEXT, input TEXT, reason TEXT, decided_by TEXT,
    decided_at REAL, PRIMARY KEY (run_id, task_key, map_index)
);
"""

# Columns added since the first schema: (table, column, definition), added to an older database.
ADDED_COLUMNS = (
    ("runs", "attempt", "INTEGER NOT NULL DEFAULT 1"),
    ("transitions", "run_attempt", "INTEGER NOT NULL DEFAULT 1"),
    ("chunks", "run_attempt", "INTEGER NOT NULL DEFAULT 1"),
    ("chunks", "retried", "INTEGER NOT NULL DEFAULT 0"),
    ("logs", "run_attempt", "INTEGER NOT NULL DEFAULT 1"),
    ("scheduled_runs", "server", "TEXT"),
    ("chunks", "node", "TEXT"),
    ("chunks", "fused", "TEXT"),
)

SCHEMA_VERSION = 11  # 8: sla_misses, 9: pauses (store.approvals), 10: chunks.node, 11: chunks.fused; PRAGMA user_version once SCHEMA and ADDED_COLUMNS are in: opening skips the writes



def rayflow_home(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    environ = os.environ if environ is None else environ
    return pathlib.Path(environ.get("RAYFLOW_HOME") or pathlib.Path.home() / ".rayflow")



def create_private(path: pathlib.Path) -> None:
    """An empty owner-only file at ``path`` (left as it is if there is one), made without opening
    ``path`` itself.  Closing any descriptor of a file drops every POSIX lock this process holds
    on it, SQLite's included: a thread of this process that opened the database between the
    check and the close lost its locks, so a writer in another process took itself for the last
    one and removed the WAL index this process still mapped, and from then on every connection
    of this process read the database as it was, missing every later write."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)  # 0600, a name of its own
    os.close(fd)
    try:
        os.link(temporary, path)  # atomic, and never replaces a database another thread or process made
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: only a file this call makes is opened
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    finally:
        os.unlink(temporary)


def is_damaged(exc: BaseException) -> bool:
    """A database file SQLite cannot read ("file is not a database", "malformed"), not one that
    is only busy or locked (OperationalError) or a constraint (IntegrityError)."""
    return type(exc) is sqlite3.DatabaseError or (
        isinstance(exc, sqlite3.DatabaseError) and ("malformed" in str(exc) or "not a database" in str(exc))
    )



SCHEMA_NAMES = frozenset(re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", SCHEMA))


def missing(db: sqlite3.Connection) -> set[str]:
    """The tables and indexes of ``SCHEMA`` the database lacks (one read of sqlite_master)."""
    return set(SCHEMA_NAMES - {r[0] for r in db.execute("SELECT name FROM sqlite_master")})


def migrate(db: sqlite3.Connection) -> None:
    """Bring the database ``db`` to this schema (a no-op, and no write, once it is there).  A file
    at this version that lacks an index or table added to SCHEMA since it was made (without a
    version raise) gets it: a reader that cannot write (read-only, locked) reads without it."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        if missing(db):  # nothing to create: reads, which a lock held by a writer does not block
            try:
                db.executescript(SCHEMA)
            except sqlite3.OperationalError:
                pass
        return
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


def redact_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as JSON-safe values, with SecretStr/SecretBytes as ***."""
    from rayflow.core.parameters import is_secret  # pydantic's secrets: not for readers of the history

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

