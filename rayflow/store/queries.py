"""The history's reads: ``Queries`` is a part of ``RunStore`` (store.history), which supplies ``_connect``."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from rayflow.state_types import FAILED_TYPES, StateType
from rayflow.store.recovery import driver_is_gone
from rayflow.store.schema import UNFINISHED

logger = logging.getLogger(__name__)

CRASHED = StateType.CRASHED.value
FAILED_STATES = tuple(sorted(t.value for t in FAILED_TYPES))
FAILED_ITEMS_SHOWN = 100  # a run's failed map items read with it (show --json, /api/runs/{id})
# A run with its schedule and scheduled time (None for the others) and its SLA misses (store.sla:
# "LATE,OVERDUE", None for none, a list in _run_row): what runs() and run() read.
RUN_SELECT = (
    "SELECT runs.*, s.schedule_id AS schedule_id, s.scheduled_for AS scheduled_for, (SELECT group_concat(m.kind, ',') "
    "FROM sla_misses AS m WHERE m.run_id = runs.run_id) AS sla FROM runs LEFT JOIN scheduled_runs AS s ON s.run_id = runs.run_id"
)


def driver_gone_message(graph: Mapping[str, Any]) -> str:
    driver = graph.get("driver") or {}
    return (
        f"its driver (pid {driver.get('pid')} on {driver.get('host')}) is gone, and took the run along; "
        "a reader of the history found it so"
    )


class Queries:
    """Runs, a run with its rows, logs: what ``rayflow runs/show/logs``, the UI and ``/api`` read.

    A run's state is the one recorded: CRASHED is written once, by whoever detects the death
    (the runner that sees its actor die, the server's reaper, or here a reader that finds an
    unfinished run's driver gone: ``settle_unfinished``), never worked out again on each read.
    """

    def _connect(self, timeout: float = 10.0) -> sqlite3.Connection:
        raise NotImplementedError

    def mark_crashed(self, run_id: str, message: str, *, timeout: float = 2.0) -> bool:
        """Record ``run_id`` CRASHED, if it is still unfinished (one conditional UPDATE, so the first
        to detect the death writes it and a run that ended meanwhile keeps its end); True if written."""
        now = time.time()
        with self._connect(timeout) as db:
            written = db.execute(
                f"UPDATE runs SET state = ?, message = ?, finished_at = ? WHERE run_id = ? AND state IN {UNFINISHED}",
                [CRASHED, message, now, run_id],
            ).rowcount
            if written:
                db.execute(
                    "INSERT OR REPLACE INTO run_attempts SELECT run_id, attempt, state, message, started_at, finished_at, "
                    "trace_id FROM runs WHERE run_id = ?", [run_id],
                )
        return bool(written)

    def settle_unfinished(self, run_id: str | None = None) -> list[str]:
        """Write CRASHED once for each unfinished run (or just ``run_id``) whose driver, recorded with
        its graph, is gone; the runs written.  Reads only the unfinished runs (a partial index)."""
        query = (
            f"SELECT runs.run_id, g.graph FROM runs JOIN graphs AS g ON g.run_id = runs.run_id "
            f"WHERE runs.state IN {UNFINISHED}" + (" AND runs.run_id = ?" if run_id is not None else "")
        )
        with self._connect() as db:
            found = db.execute(query, [run_id] if run_id is not None else []).fetchall()
        crashed = []
        for row in found:
            graph = json.loads(row["graph"])
            if driver_is_gone(graph):
                try:
                    if self.mark_crashed(row["run_id"], driver_gone_message(graph)):
                        crashed.append(row["run_id"])
                except sqlite3.OperationalError as exc:  # locked, or read-only: the next reader writes it
                    logger.info("rayflow: cannot record run %s CRASHED yet: %s", row["run_id"], exc)
        return crashed

    def runs(
        self, *, flow: str | None = None, state: str | None = None, limit: int = 20, since: float | None = None,
        offset: int = 0, before: float | None = None,
    ) -> list[dict]:
        """Runs newest first, as recorded (unfinished runs whose driver is gone settled first): ``limit``
        of them after the first ``offset``, filtered and paged in SQL, whatever the state asked for;
        ``since``..``before``: started in that window (``before`` excluded)."""
        self.settle_unfinished()
        where, args = [], []
        if flow:
            where, args = [*where, "runs.flow = ?"], [*args, flow]
        if state:
            where, args = [*where, "runs.state = ?"], [*args, state.upper()]
        if since is not None:
            where, args = [*where, "runs.started_at >= ?"], [*args, since]
        if before is not None:
            where, args = [*where, "runs.started_at < ?"], [*args, before]
        page = (  # the page's rows found in an index alone (a far page skips index entries, not joined rows)
            "SELECT runs.rowid FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY runs.started_at DESC LIMIT ? OFFSET ?"  # a limit < 0: all, as SQL's
        )
        query = RUN_SELECT + f" WHERE runs.rowid IN ({page}) ORDER BY runs.started_at DESC"
        with self._connect() as db:
            return [self._run_row(found) for found in db.execute(query, [*args, limit, offset])]

    def flows(self) -> list[str]:
        """The names of the flows the history has runs of, sorted: one index search per flow
        (runs_by_flow), not a pass over every run."""
        query = (
            "WITH RECURSIVE f(name) AS (SELECT MIN(flow) FROM runs UNION ALL "
            "SELECT (SELECT MIN(flow) FROM runs WHERE flow > f.name) FROM f WHERE f.name IS NOT NULL) "
            "SELECT name FROM f WHERE name IS NOT NULL"
        )
        with self._connect() as db:
            return [r["name"] for r in db.execute(query)]

    def run(self, run_id: str) -> dict | None:
        self.settle_unfinished(run_id)
        with self._connect() as db:
            row = db.execute(RUN_SELECT + " WHERE runs.run_id = ?", [run_id]).fetchone()
            if row is None:
                return None
            run = self._run_row(row)
            graph = db.execute("SELECT graph FROM graphs WHERE run_id = ?", [run_id]).fetchone()
            run["graph"] = json.loads(graph["graph"]) if graph is not None else None
            attempt = run["attempt"]  # the latest attempt's tasks and chunks; every attempt's outcome
            run["transitions"] = [dict(r) for r in db.execute(
                "SELECT * FROM transitions WHERE run_id = ? AND run_attempt = ? ORDER BY rowid", [run_id, attempt])]
            run["chunks"] = [dict(r) | {"counts": json.loads(r["counts"] or "{}")} for r in db.execute(
                "SELECT * FROM chunks WHERE run_id = ? AND run_attempt = ? ORDER BY task_key, start", [run_id, attempt])]
            run["attempts"] = [dict(r) for r in db.execute(
                "SELECT attempt, state, message, started_at, finished_at, trace_id FROM run_attempts "
                "WHERE run_id = ? ORDER BY attempt", [run_id])]
            run["failed_items"] = [dict(r) for r in db.execute(  # the first of them: items() pages the rest
                "SELECT task_key, item, state, attempts, error_type, message FROM items WHERE run_id = ? AND run_attempt = ? "
                f"AND state IN {FAILED_STATES} ORDER BY task_key, item LIMIT ?", [run_id, attempt, FAILED_ITEMS_SHOWN])]
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
        One query per page, a search of the items table's key (a state is filtered on the way: no
        second index to keep up as the run writes), whatever the map's size.
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

    def item_counts(self, run_id: str) -> dict[str, int]:
        """How many item rows each map of the run's latest attempt has (maps without any left out):
        one grouped count along the items table's key, whatever the maps' sizes."""
        query = (
            "SELECT task_key, COUNT(*) AS n FROM items WHERE run_id = ? AND run_attempt = "
            "(SELECT attempt FROM runs WHERE run_id = ?) GROUP BY task_key ORDER BY task_key"
        )
        with self._connect() as db:
            return {r["task_key"]: r["n"] for r in db.execute(query, [run_id, run_id])}

    def logs(self, run_id: str, *, task: str | None = None, after: int = 0, item: int | None = None) -> list[dict]:
        """Log records of a run in order; ``after`` a row number, to follow a live run; ``item``:
        only those of this map index (with ``task``, the map's)."""
        query, args = "SELECT rowid AS row, * FROM logs WHERE run_id = ? AND rowid > ?", [run_id, after]
        if task:
            query, args = query + " AND task_key = ?", [*args, task]
        if item is not None:
            query, args = query + " AND map_index = ?", [*args, item]
        with self._connect() as db:
            return [dict(r) for r in db.execute(query + " ORDER BY rowid", args)]

    def task_keys(self, run_id: str) -> set[str]:
        """The keys of a run's tasks (planned or recorded), without its rows: to check a filter."""
        with self._connect() as db:
            row = db.execute("SELECT tasks FROM runs WHERE run_id = ?", [run_id]).fetchone()
            seen = {r[0] for r in db.execute("SELECT DISTINCT task_key FROM transitions WHERE run_id = ?", [run_id])}
        return seen | set(json.loads(row["tasks"]) if row is not None else [])

    def log_page(
        self, run_id: str, *, task: str | None = None, below: tuple[str, ...] = (), text: str | None = None,
        after: int = 0, limit: int = 500,
    ) -> list[dict]:
        """Log records of a run in order, filtered in SQL: ``task``'s only, none of the levels
        ``below``, only those whose message contains ``text`` (case-insensitive, ASCII).  With
        ``after`` (a row number: a live tail) the first ``limit`` records after it; else the last
        ``limit`` of the run.  Along the index of (run, task) or of (run) in row order: no sort."""
        query, args = "SELECT rowid AS row, * FROM logs WHERE run_id = ? AND rowid > ?", [run_id, after]
        if task:
            query, args = query + " AND task_key = ?", [*args, task]
        if below:
            query, args = query + f" AND level NOT IN ({', '.join('?' * len(below))})", [*args, *below]
        if text:
            query, args = query + " AND instr(lower(message), ?) > 0", [*args, text.lower()]
        newest = after <= 0
        query += (" ORDER BY rowid DESC" if newest else " ORDER BY rowid") + " LIMIT ?"
        with self._connect() as db:
            rows = [dict(r) for r in db.execute(query, [*args, limit])]
        return rows[::-1] if newest else rows

    @staticmethod
    def _run_row(row: sqlite3.Row) -> dict:
        out = dict(row)
        out["params"] = json.loads(out["params"])
        out["tasks"] = json.loads(out["tasks"])
        out["sla"] = sorted(out["sla"].split(",")) if out.get("sla") else []
        return out

