"""The run history: runs, their tasks' state transitions, and map chunk summaries.

The orchestrating actor writes it through a ``HistoryRecorder``, which
buffers rows and writes them in batches from a thread of its own, so a run
with a million-item map writes per-chunk rows, never per-item rows, and the
flow never waits on the disk.  Anyone on the machine reads it with a
``RunStore`` (``rayflow runs``, ``rayflow show``).
"""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import threading
import time
from collections.abc import Mapping
from typing import Any

from rayflow.core.parameters import is_secret
from rayflow.engine import columns as C
from rayflow.states import State

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, flow TEXT NOT NULL, params TEXT NOT NULL, state TEXT NOT NULL,
    message TEXT, started_at REAL, finished_at REAL, trace_id TEXT, tasks TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs(started_at);
CREATE TABLE IF NOT EXISTS transitions (
    run_id TEXT NOT NULL, task_key TEXT NOT NULL, seq INTEGER NOT NULL, state TEXT NOT NULL,
    attempt INTEGER, message TEXT, error_type TEXT, traceback TEXT, at REAL, started_at REAL, finished_at REAL
);
CREATE INDEX IF NOT EXISTS transitions_by_run ON transitions(run_id, task_key, seq);
CREATE TABLE IF NOT EXISTS chunks (
    run_id TEXT NOT NULL, task_key TEXT NOT NULL, start INTEGER, stop INTEGER, items INTEGER,
    counts TEXT, started_at REAL, finished_at REAL, error TEXT
);
CREATE INDEX IF NOT EXISTS chunks_by_run ON chunks(run_id, task_key);
CREATE TABLE IF NOT EXISTS logs (
    run_id TEXT NOT NULL, at REAL, level TEXT, message TEXT, task_key TEXT, map_index INTEGER,
    trace_id TEXT, span_id TEXT
);
CREATE INDEX IF NOT EXISTS logs_by_run ON logs(run_id, task_key);
"""

FLUSH_SECONDS = 0.5


def rayflow_home(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    environ = os.environ if environ is None else environ
    return pathlib.Path(environ.get("RAYFLOW_HOME") or pathlib.Path.home() / ".rayflow")


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


class RunStore:
    def __init__(self, home: pathlib.Path | str | None = None):
        self.home = pathlib.Path(home) if home is not None else rayflow_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / "history.db"
        with self._connect() as db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # with WAL: no corruption, far fewer fsyncs
        return db

    # -- writing -------------------------------------------------------------

    def write(self, runs: list[tuple], transitions: list[tuple], chunks: list[tuple], logs: list[tuple] = ()) -> None:
        with self._connect() as db:
            if logs:
                db.executemany("INSERT INTO logs VALUES (?,?,?,?,?,?,?,?)", logs)
            if runs:
                db.executemany("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?)", runs)
            if transitions:
                db.executemany("INSERT INTO transitions VALUES (?,?,?,?,?,?,?,?,?,?,?)", transitions)
            if chunks:
                db.executemany("INSERT INTO chunks VALUES (?,?,?,?,?,?,?,?,?)", chunks)

    # -- reading -------------------------------------------------------------

    def runs(self, *, flow: str | None = None, state: str | None = None, limit: int = 20) -> list[dict]:
        query, args = "SELECT * FROM runs WHERE 1=1", []
        if flow:
            query, args = query + " AND flow = ?", [*args, flow]
        if state:
            query, args = query + " AND state = ?", [*args, state.upper()]
        query += " ORDER BY started_at DESC LIMIT ?"
        with self._connect() as db:
            return [self._run_row(r) for r in db.execute(query, [*args, limit])]

    def run(self, run_id: str) -> dict | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).fetchone()
            if row is None:
                return None
            run = self._run_row(row)
            run["transitions"] = [dict(r) for r in db.execute(
                "SELECT * FROM transitions WHERE run_id = ? ORDER BY rowid", [run_id])]
            run["chunks"] = [dict(r) | {"counts": json.loads(r["counts"] or "{}")} for r in db.execute(
                "SELECT * FROM chunks WHERE run_id = ? ORDER BY task_key, start", [run_id])]
        return run

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


class HistoryRecorder:
    """Buffers a run's events and writes them in batches (a listener of the orchestrator)."""

    def __init__(self, store: RunStore, run_id: str, flow_name: str, params: Mapping[str, Any], task_keys: list[str]):
        self.store = store
        self.run_id = run_id
        self.flow_name = flow_name
        self.params = json.dumps(redact_params(params))
        self.task_keys = json.dumps(task_keys)
        self.trace_id: str | None = None
        self._seq: dict[str, int] = {}
        self._transitions: list[tuple] = []
        self._chunks: list[tuple] = []
        self._logs: list[tuple] = []
        self._run: tuple | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"history-{run_id}", daemon=True)
        self._thread.start()

    def on_transition(self, *, run_id: str, task_key: str | None, old: State, new: State) -> None:
        with self._lock:
            if task_key is None:
                self._run = (
                    self.run_id, self.flow_name, self.params, new.type.value, new.message,
                    new.started_at, new.finished_at, self.trace_id, self.task_keys,
                )
                return
            seq = self._seq[task_key] = self._seq.get(task_key, 0) + 1
            error = new.error
            self._transitions.append((
                self.run_id, task_key, seq, new.type.value, new.attempt, new.message[:2000],
                error.type if error else None, error.traceback[-8000:] if error else None,
                new.timestamp, new.started_at, new.finished_at,
            ))

    def on_chunk(self, *, task_key: str, work: Any, summary: Any, error: Any = None) -> None:
        job = work.job
        counts = {C.CODES[code].value: n for code, n in summary.counts.items()} if summary is not None else {}
        row = (
            self.run_id, task_key, job.start, job.start + job.size,
            summary.size if summary is not None else job.size, json.dumps(counts),
            summary.started_at if summary is not None else None,
            summary.finished_at if summary is not None else time.time(),
            str(error) if error is not None else (summary.errors[0][1] if summary.errors else None),
        )
        with self._lock:
            self._chunks.append(row)

    def on_report(self, work: Any, report: Any) -> None:
        records = getattr(report, "logs", ())
        if records:
            with self._lock:
                self._logs.extend((self.run_id, *record) for record in records)

    def _take(self) -> tuple[list, list, list, list]:
        with self._lock:
            runs = [self._run] if self._run is not None else []
            out = (runs, self._transitions, self._chunks, self._logs)
            self._run, self._transitions, self._chunks, self._logs = None, [], [], []
        return out

    def flush(self) -> None:
        runs, transitions, chunks, logs = self._take()
        if runs or transitions or chunks or logs:
            self.store.write(runs, transitions, chunks, logs)

    def _loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.flush()
