"""The history's reads: ``Queries`` is a part of ``RunStore`` (store.history), which supplies ``_connect``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from rayflow.store.recovery import driver_is_gone
from rayflow.store.schema import UNFINISHED

CRASHED = "CRASHED"


def shown_state(recorded: str, graph: Mapping[str, Any] | None) -> str:
    """A run's state as every reader shows it and filters it: the recorded one, except that an
    unfinished run whose driver (recorded with its graph) is gone is CRASHED, since that driver
    took its actor, and so the run, along.  The one rule: ``runs``, ``show``, the UI, its
    filters and ``schedules`` all read a run's state through it."""
    if recorded in UNFINISHED and graph is not None and driver_is_gone(graph):
        return CRASHED
    return recorded



class Queries:
    """Runs, a run with its rows, logs: what ``rayflow runs/show/logs``, the UI and ``/api`` read."""

    def _connect(self, timeout: float = 10.0) -> sqlite3.Connection:
        raise NotImplementedError

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

    def items(
        self, run_id: str, task: str, *, state: str | None = None, after: int = -1, limit: int = 100,
        attempt: int | None = None,
    ) -> list[dict]:
        """A page of a map's item rows, as the engine recorded them (one per item that did not succeed
        or was run again: ``item`` its map index, ``state``, ``attempts``, ``error_type``, ``message``,
        ``traceback``), in index order from the first after ``after``; ``state`` keeps one state.
        One indexed query per page (the items table's key, or ``items_by_state``), whatever the map's size.
        ``attempt``: the run's attempt (default its latest)."""
        if limit < 0:
            raise ValueError(f"limit must be 0 or more, not {limit}")
        query = (
            "SELECT item, state, attempts, error_type, message, traceback FROM items WHERE run_id = ? AND run_attempt = "
            + ("?" if attempt is not None else "(SELECT attempt FROM runs WHERE run_id = ?)")
            + " AND task_key = ?" + (" AND state = ?" if state else "") + " AND item > ? ORDER BY item LIMIT ?"
        )
        args = [run_id, attempt if attempt is not None else run_id, task, *([state.upper()] if state else []), after, limit]
        with self._connect() as db:
            return [dict(r) for r in db.execute(query, args)]

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

