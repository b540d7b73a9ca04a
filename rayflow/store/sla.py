"""Flows' SLA misses in the run history (``sla_misses``): a fire that started late (LATE) or a run
that went past its ``max_duration`` (OVERDUE), one row per (run, kind): its PRIMARY KEY makes
each recorded once, whichever server saw it (``record`` says whether this call recorded it)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from rayflow.store.history import RunStore

KINDS = ("LATE", "OVERDUE")


def record(runs: RunStore, run_id: str, kind: str, *, flow: str, schedule_id: str | None,
           scheduled_for: float | None, message: str, at: float | None = None) -> bool:
    """Record the miss; True if this call recorded it (False: it was already)."""
    with runs._connect() as db:
        added = db.execute(
            "INSERT OR IGNORE INTO sla_misses VALUES (?,?,?,?,?,?,?)",
            [run_id, kind, flow, schedule_id, scheduled_for, at if at is not None else time.time(), message],
        ).rowcount
        if added:  # and in the run's logs, where `rayflow logs` and the run's page show it
            db.execute("INSERT INTO logs VALUES (?,?,?,?,?,?,?,?,?)",
                       [run_id, time.time(), "WARNING", f"SLA {kind}: {message}", None, None, None, None, 1])
    return bool(added)


def of_runs(runs: RunStore, run_ids: Iterable[str]) -> dict[str, list[str]]:
    """run id -> the kinds of miss it has (LATE before OVERDUE), for the runs that have one."""
    ids = list(dict.fromkeys(run_ids))
    out: dict[str, list[str]] = {}
    with runs._connect() as db:
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            rows = db.execute(
                f"SELECT run_id, kind FROM sla_misses WHERE run_id IN ({','.join('?' * len(part))}) ORDER BY kind",
                part,
            ).fetchall()
            for row in rows:
                out.setdefault(row["run_id"], []).append(row["kind"])
    return out


def of_schedules(runs: RunStore) -> dict[str, dict[str, int]]:
    """schedule id -> {kind: misses}, for ``rayflow schedules``."""
    with runs._connect() as db:
        rows = db.execute("SELECT schedule_id, kind, COUNT(*) AS n FROM sla_misses "
                          "WHERE schedule_id IS NOT NULL GROUP BY schedule_id, kind").fetchall()
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        out.setdefault(row["schedule_id"], {})[row["kind"]] = row["n"]
    return out


def one_run(runs: RunStore, run_id: str) -> list[dict]:
    """The misses of one run (the UI's run page), oldest first."""
    with runs._connect() as db:
        rows = db.execute("SELECT * FROM sla_misses WHERE run_id = ? ORDER BY at", [run_id]).fetchall()
    return [dict(r) for r in rows]
