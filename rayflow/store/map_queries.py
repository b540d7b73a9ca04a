"""The reads of one task of a run, and of a map's items: what the UI's task, map and item pages show.

``TaskQueries`` is a part of ``RunStore`` (store.history), which supplies ``_connect``.  Each read
is a search along an index of its table (the items table's key, ``items_by_error``,
``transitions_by_run``, ``chunks_by_run``, ``logs_by_run``, ``logs_by_item``), whatever the
size of the run or of the map: a 10^6-item map with 10^4 failed items is read a page at a time.
"""

from __future__ import annotations

import json
import sqlite3

from rayflow.store.queries import RUN_SELECT

ITEM_COLUMNS = "item, state, attempts, error_type, message, traceback"
TASK_LOGS_SHOWN = 500  # a task's newest log records on its page


class TaskQueries:
    def _connect(self, timeout: float = 10.0) -> sqlite3.Connection:
        raise NotImplementedError

    def settle_unfinished(self, run_id: str | None = None) -> list[str]:
        raise NotImplementedError

    def task_record(self, run_id: str, task_key: str) -> dict | None:
        """The run (its row, graph and attempts) with only ``task_key``'s rows of its latest
        attempt: ``transitions`` in order, ``chunks`` (a map's, by start); None: no such run."""
        self.settle_unfinished(run_id)
        with self._connect() as db:
            row = db.execute(RUN_SELECT + " WHERE runs.run_id = ?", [run_id]).fetchone()
            if row is None:
                return None
            run = dict(row) | {"params": json.loads(row["params"]), "tasks": json.loads(row["tasks"])}
            graph = db.execute("SELECT graph FROM graphs WHERE run_id = ?", [run_id]).fetchone()
            run["graph"] = json.loads(graph["graph"]) if graph is not None else None
            args = [run_id, task_key, run["attempt"]]
            run["transitions"] = [dict(r) for r in db.execute(
                "SELECT * FROM transitions WHERE run_id = ? AND task_key = ? AND run_attempt = ? ORDER BY seq", args)]
            run["chunks"] = [dict(r) | {"counts": json.loads(r["counts"] or "{}")} for r in db.execute(
                "SELECT * FROM chunks WHERE run_id = ? AND task_key = ? AND run_attempt = ? ORDER BY start, rowid", args)]
            run["attempts"] = [dict(r) for r in db.execute(
                "SELECT attempt, state, message, started_at, finished_at FROM run_attempts WHERE run_id = ? ORDER BY attempt",
                [run_id])]
        return run

    def item_facets(self, run_id: str, task_key: str, attempt: int) -> list[dict]:
        """How many item rows of the map have each (state, error type): one grouped count over the
        ``items_by_error`` index (the rows themselves, with their tracebacks, are not read)."""
        query = (
            "SELECT state, error_type, COUNT(*) AS n FROM items "
            "WHERE run_id = ? AND run_attempt = ? AND task_key = ? GROUP BY error_type, state ORDER BY error_type, state"
        )
        with self._connect() as db:
            return [dict(r) for r in db.execute(query, [run_id, attempt, task_key])]

    def item_page(
        self, run_id: str, task_key: str, attempt: int, *, state: str | None = None, error_type: str | None = None,
        after: int = -1, limit: int = 50,
    ) -> list[dict]:
        """The map's item rows after index ``after`` in index order, ``limit`` of them, keeping one
        state and/or one error type: the page's indexes first (a range of ``items_by_error`` for an
        error type, else of the table's key), then those rows only."""
        where = "run_id = ? AND run_attempt = ? AND task_key = ?"
        args: list = [run_id, attempt, task_key]
        if error_type is not None:
            where, args = where + " AND error_type = ?", [*args, error_type]
        if state is not None:
            where, args = where + " AND state = ?", [*args, state]
        picked = (
            f"SELECT item FROM items WHERE {where} AND item > ? "
            "ORDER BY item LIMIT ?"
        )
        query = (
            f"SELECT {ITEM_COLUMNS} FROM items WHERE run_id = ? AND run_attempt = ? AND task_key = ? "
            f"AND item IN ({picked}) ORDER BY item"
        )
        with self._connect() as db:
            return [dict(r) for r in db.execute(query, [run_id, attempt, task_key, *args, after, limit])]

    def item(self, run_id: str, task_key: str, attempt: int, index: int) -> dict | None:
        """The row the engine recorded for item ``index`` of the map (None: it has none)."""
        with self._connect() as db:
            row = db.execute(
                f"SELECT {ITEM_COLUMNS} FROM items WHERE run_id = ? AND run_attempt = ? AND task_key = ? AND item = ?",
                [run_id, attempt, task_key, index],
            ).fetchone()
        return dict(row) if row is not None else None

    def task_logs(self, run_id: str, task_key: str, limit: int = TASK_LOGS_SHOWN) -> tuple[list[dict], bool]:
        """The task's newest ``limit`` log records in order, and whether it has older ones."""
        with self._connect() as db:
            rows = [dict(r) for r in db.execute(
                "SELECT rowid AS row, * FROM logs WHERE run_id = ? AND task_key = ? ORDER BY rowid DESC LIMIT ?",
                [run_id, task_key, limit + 1])]
        return rows[:limit][::-1], len(rows) > limit
