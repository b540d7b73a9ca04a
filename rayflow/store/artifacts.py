"""Artifacts in the history: their writes (versions of keyed ones) and reads.

A row per ``rf.artifacts`` call (engine.worker.artifacts), written by the run's HistoryRecorder
with the run's other rows.  An artifact with a key gets the next ``version`` of that key and
becomes its ``latest`` (the list of keys reads only those, by the partial index
``artifacts_latest``); a ``progress`` artifact with a key has one row per run, updated by each
later report of it.  Lists read the one-line ``summary``, never the data (a table's rows, an
image's bytes); ``artifact`` reads one whole.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

# What the recorder gives per artifact (the worker's record with the run first):
# (run_id, run_attempt, at, kind, key, task_key, map_index, summary, data, image)
WRITE_COLUMNS = "run_id, run_attempt, at, kind, key, task_key, map_index, summary, data, image, version, latest"
LISTED = "artifact_id, run_id, run_attempt, at, kind, key, task_key, map_index, summary, version, latest"


def write_artifacts(db: sqlite3.Connection, rows: list[tuple]) -> None:
    """Insert ``rows`` (in the caller's transaction), numbering the versions of keyed ones."""
    for row in rows:
        run_id, _, at, kind, key, _, _, summary, data, _ = row
        if key is None:
            db.execute(f"INSERT INTO artifacts ({WRITE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,NULL,0)", row)
            continue
        if kind == "progress":  # the run's one row of this key, if it has one already
            updated = db.execute(
                "UPDATE artifacts SET at = ?, summary = ?, data = ? WHERE key = ? AND run_id = ? AND kind = 'progress'",
                [at, summary, data, key, run_id],
            ).rowcount
            if updated:
                continue
        version = db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM artifacts WHERE key = ?", [key]).fetchone()[0]
        db.execute("UPDATE artifacts SET latest = 0 WHERE key = ? AND latest = 1", [key])
        db.execute(f"INSERT INTO artifacts ({WRITE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,1)", [*row, version])


def _run_filter(run_id: str, task: str | None) -> tuple[str, list]:
    return ("run_id = ? AND task_key = ?", [run_id, task]) if task is not None else ("run_id = ?", [run_id])


def _listed(row: sqlite3.Row) -> dict[str, Any]:
    return dict(row)


def _whole(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["data"] = json.loads(out["data"])
    return out


class ArtifactQueries:
    """The artifacts' reads, a part of ``RunStore`` (which supplies ``_connect``)."""

    def _connect(self, timeout: float = 10.0) -> sqlite3.Connection:
        raise NotImplementedError

    def run_artifacts(
        self, run_id: str, *, task: str | None = None, key: str | None = None, limit: int = 100, offset: int = 0,
        data: bool = True,
    ) -> list[dict]:
        """A run's artifacts (of one task, of one key), in the order recorded; with their data unless
        ``data=False`` (never an image's bytes: ``artifact_image`` reads those)."""
        columns = LISTED + (", data" if data else "")
        where, args = _run_filter(run_id, task)
        if key is not None:
            where, args = where + " AND key = ?", [*args, key]
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {columns} FROM artifacts WHERE {where} ORDER BY artifact_id LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [_whole(r) if data else _listed(r) for r in rows]

    def count_run_artifacts(self, run_id: str, *, task: str | None = None) -> int:
        where, args = _run_filter(run_id, task)
        with self._connect() as db:
            return db.execute(f"SELECT COUNT(*) FROM artifacts WHERE {where}", args).fetchone()[0]

    def latest_artifacts(self, *, limit: int = 50, offset: int = 0) -> list[dict]:
        """The latest version of each key, newest first (its summary, not its data)."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {LISTED} FROM artifacts WHERE latest = 1 ORDER BY at DESC, artifact_id DESC LIMIT ? OFFSET ?",
                [limit, offset],
            ).fetchall()
        return [_listed(r) for r in rows]

    def artifact_versions(self, key: str, *, limit: int = 50, offset: int = 0) -> list[dict]:
        """Every version of ``key``, newest first (summaries); [] for a key never recorded."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {LISTED} FROM artifacts WHERE key = ? ORDER BY version DESC LIMIT ? OFFSET ?", [key, limit, offset],
            ).fetchall()
        return [_listed(r) for r in rows]

    def artifact(self, key: str | None = None, *, version: int | None = None, artifact_id: int | None = None) -> dict | None:
        """One artifact with its data: by id, or ``key``'s ``version`` (its latest without one)."""
        if artifact_id is not None:
            where, args = "artifact_id = ?", [artifact_id]
        elif version is not None:
            where, args = "key = ? AND version = ?", [key, version]
        else:
            where, args = "key = ? AND latest = 1", [key]
        with self._connect() as db:
            row = db.execute(f"SELECT {LISTED}, data FROM artifacts WHERE {where}", args).fetchone()
        return _whole(row) if row is not None else None

    def artifact_image(self, artifact_id: int) -> str | None:
        """An image artifact's PNG, base64; None if there is no such image."""
        with self._connect() as db:
            row = db.execute("SELECT image FROM artifacts WHERE artifact_id = ? AND kind = 'image'", [artifact_id]).fetchone()
        return row[0] if row is not None else None
