"""What ``rayflow serve`` keeps in the run history: its schedules and their fires.

- ``schedules``: one row per served schedule (its id, flow, import target and
  spec), with ``evaluated_until``, the time up to which its fires have been
  dealt with, so a restarted server knows what it missed, and ``next_fire``.
- ``scheduled_runs``: one row per (schedule, scheduled time), the idempotency
  key: its PRIMARY KEY makes a second claim of the same fire fail, so two
  servers racing on one database start each fire once.  ``outcome`` says what
  became of it (``started``, ``queued``, ``skipped (overlap)``, ...); ``run_id``
  joins it to the run it started (``rayflow runs`` shows the marker).
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from rayflow.store.history import RunStore


class ScheduleStore:
    def __init__(self, runs: RunStore):
        self.runs = runs

    def register(self, schedule_id: str, flow: str, target: str | None, spec: dict[str, Any], now: float) -> float:
        """Record a served schedule (or its new spec); returns ``evaluated_until``: now for a schedule
        never served, else where its server stopped."""
        with self.runs._connect() as db:
            row = db.execute("SELECT evaluated_until FROM schedules WHERE schedule_id = ?", [schedule_id]).fetchone()
            if row is None or row["evaluated_until"] is None:
                db.execute(
                    "INSERT OR REPLACE INTO schedules VALUES (?,?,?,?,?,?,?)",
                    [schedule_id, flow, target, json.dumps(spec, default=str), now, None, now],
                )
                return now
            db.execute(
                "UPDATE schedules SET flow = ?, target = ?, spec = ?, updated_at = ? WHERE schedule_id = ?",
                [flow, target, json.dumps(spec, default=str), now, schedule_id],
            )
            return float(row["evaluated_until"])

    def advance(self, schedule_id: str, until: float, next_fire: float | None) -> None:
        with self.runs._connect() as db:
            db.execute(
                "UPDATE schedules SET evaluated_until = MAX(COALESCE(evaluated_until, 0), ?), next_fire = ?, "
                "updated_at = ? WHERE schedule_id = ?",
                [until, next_fire, time.time(), schedule_id],
            )

    def claim(self, schedule_id: str, scheduled_for: float, run_id: str, outcome: str) -> bool:
        """Take the fire ``(schedule_id, scheduled_for)``; False when another server has it."""
        try:
            with self.runs._connect() as db:
                db.execute(
                    "INSERT INTO scheduled_runs VALUES (?,?,?,?,?)", [schedule_id, scheduled_for, run_id, outcome, time.time()]
                )
            return True
        except sqlite3.IntegrityError:
            return False

    def settle(self, schedule_id: str, scheduled_for: float, outcome: str, run_id: str | None = None) -> None:
        with self.runs._connect() as db:
            db.execute(
                "UPDATE scheduled_runs SET outcome = ?, run_id = COALESCE(?, run_id), at = ? "
                "WHERE schedule_id = ? AND scheduled_for = ?",
                [outcome, run_id, time.time(), schedule_id, scheduled_for],
            )

    def fires(self, schedule_id: str) -> list[dict]:
        with self.runs._connect() as db:
            return [dict(r) for r in db.execute(
                "SELECT * FROM scheduled_runs WHERE schedule_id = ? ORDER BY scheduled_for", [schedule_id])]

    def schedules(self) -> list[dict]:
        """Every schedule with its last fire's outcome and, when it started one, that run's state."""
        with self.runs._connect() as db:
            rows = [dict(r) for r in db.execute("SELECT * FROM schedules ORDER BY schedule_id")]
            for row in rows:
                try:
                    row["spec"] = json.loads(row["spec"])
                except (TypeError, ValueError):  # damaged by hand: listed as such
                    row["spec"] = {"kind": "unreadable", "text": str(row["spec"])[:200]}
                last = db.execute(
                    "SELECT s.scheduled_for, s.outcome, s.run_id, r.state FROM scheduled_runs AS s "
                    "LEFT JOIN runs AS r ON r.run_id = s.run_id WHERE s.schedule_id = ? "
                    "ORDER BY s.scheduled_for DESC LIMIT 1", [row["schedule_id"]],
                ).fetchone()
                row["last"] = dict(last) if last is not None else None
                if last is not None:  # as `rayflow runs` and `show` read it (CRASHED once its driver is gone)
                    row["last"]["state"] = self.runs._shown(db, last["run_id"], last["state"])
        return rows
