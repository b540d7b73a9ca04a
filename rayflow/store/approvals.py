"""Pauses and their decisions as the run history keeps them (table ``pauses``).

One row per paused task (``map_index`` -1) or paused item of a map: the pause's message,
the JSON schema of the input it waits for (NULL: none), its timeout, when it paused; then
the decision (``approved`` or ``rejected``), the approved input (JSON), the reason, who
decided (the OS user for the CLI, ``ui`` for the UI) and when.  A decision is made once:
``decide`` changes only a row without one.  The run's orchestrator (its ``PauseBook``,
runs.approval) opens the rows and reads the decisions; ``rf.approve``/``rf.reject`` write
them, and a log line of the run says who decided what (``rayflow logs``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from rayflow.store.history import RunStore

NO_ITEM = -1


class PauseStore:
    def __init__(self, runs: RunStore):
        self.runs = runs

    def open(
        self, run_id: str, task_key: str, index: int | None, message: str, schema: dict | None, timeout: float | None
    ) -> None:
        """A task (or item) paused: its row, with no decision (a pause again after one starts over)."""
        with self.runs._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO pauses VALUES (?,?,?,?,?,?,?,NULL,NULL,NULL,NULL,NULL)",
                [run_id, task_key, NO_ITEM if index is None else index, message,
                 None if schema is None else json.dumps(schema), timeout, time.time()],
            )

    def decide(
        self, run_id: str, task_key: str, index: int | None, decision: str, value: Any, reason: str | None,
        by: str, attempt: int = 1,
    ) -> bool:
        """Record a decision on a pause that has none; False when there is no such open pause."""
        now = time.time()
        where = NO_ITEM if index is None else index
        with self.runs._connect() as db:
            changed = db.execute(
                "UPDATE pauses SET decision = ?, input = ?, reason = ?, decided_by = ?, decided_at = ? "
                "WHERE run_id = ? AND task_key = ? AND map_index = ? AND decision IS NULL",
                [decision, None if value is None else json.dumps(value), reason, by, now, run_id, task_key, where],
            ).rowcount
            if changed:
                said = f"{decision} by {by}" + (f": {reason}" if reason else "")
                if value is not None:
                    said += f" with input {json.dumps(value)}"
                db.execute(
                    "INSERT INTO logs VALUES (?,?,?,?,?,?,?,?,?)",
                    [run_id, now, "INFO", f"pause of {task_key} {said}", task_key, index, None, None, attempt],
                )
        return bool(changed)

    def pauses(self, run_id: str) -> list[dict[str, Any]]:
        """The run's pauses, each a dict (schema and input parsed), by task key and item."""
        with self.runs._connect() as db:
            rows = db.execute(
                "SELECT * FROM pauses WHERE run_id = ? ORDER BY task_key, map_index", [run_id]
            ).fetchall()
        return [_row(r) for r in rows]

    def pause(self, run_id: str, task_key: str, index: int | None) -> dict[str, Any] | None:
        with self.runs._connect() as db:
            row = db.execute(
                "SELECT * FROM pauses WHERE run_id = ? AND task_key = ? AND map_index = ?",
                [run_id, task_key, NO_ITEM if index is None else index],
            ).fetchone()
        return None if row is None else _row(row)

    def waiting(self, run_ids: list[str]) -> dict[str, int]:
        """Run id -> its pauses with no decision yet (runs with none left out)."""
        if not run_ids:
            return {}
        marks = ",".join("?" * len(run_ids))
        with self.runs._connect() as db:
            rows = db.execute(
                f"SELECT run_id, COUNT(*) FROM pauses WHERE decision IS NULL AND run_id IN ({marks}) GROUP BY run_id",
                run_ids,
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}


def with_waiting(runs: RunStore, rows: list[dict]) -> list[dict]:
    """``rows`` (runs) each with ``waiting``: its pauses waiting for a decision (``rayflow runs``)."""
    counts = PauseStore(runs).waiting([r["run_id"] for r in rows if r.get("state") in ("RUNNING", "PENDING")])
    return [r | {"waiting": counts.get(r["run_id"], 0)} for r in rows]


def _row(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["schema"] = json.loads(out["schema"]) if out["schema"] else None
    out["input"] = json.loads(out["input"]) if out["input"] is not None else None
    out["map_index"] = None if out["map_index"] == NO_ITEM else out["map_index"]
    return out
