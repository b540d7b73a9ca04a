"""What ``rayflow serve`` keeps in the run history: its schedules and their fires.

- ``schedules``: one row per served schedule (its id, flow, import target and
  spec), with ``evaluated_until``, the time up to which its fires have been
  dealt with, so a restarted server knows what it missed, and ``next_fire``.
- ``scheduled_runs``: one row per (schedule, scheduled time), the idempotency
  key: its PRIMARY KEY makes a second claim of the same fire fail, so two
  servers racing on one database start each fire once.  ``outcome`` says what
  became of it (``started``, ``queued``, ``skipped (overlap)``, ...); ``run_id``
  joins it to the run it started (``rayflow runs`` shows the marker);
  ``server`` is the server that holds it.
- ``servers``: one row per server (host, pid, the schedules it serves), its
  ``heartbeat_at`` renewed every second or so, ``stopped_at`` set when it
  stops.  A server is alive while it has not stopped, its heartbeat is newer
  than the lease and, on this host, its pid exists: a SIGKILLed server on this
  host is known dead at once, one elsewhere when its lease runs out.

A fire still to be started by its server (``HELD``) is that server's; once its
server is dead, the next server serving the schedule takes it over with one
conditional UPDATE (``adopt``: two servers adopting the same fire, one wins),
and a server settles a held fire only while it still holds it (``hold``): a
server that stalled past its lease and lost a fire does not start it too.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from rayflow.store.history import RunStore, driver_alive

# A fire its server holds but has not started: claimed, queued (overlap="queue"), waiting for a slot
# (max_concurrent), or starting (its run id chosen; a run that never reached the history never started).
HELD = ("claimed", "starting", "queued", "waiting (max_concurrent)")
_HELD_SQL = f"outcome IN ({', '.join(repr(h) for h in HELD)})"  # the same text as SCHEMA's partial index
FORGET_SERVERS_AFTER = 86_400.0  # seconds: a server stopped, or silent, this long is forgotten


def server_alive(row: dict | None, now: float, lease: float) -> bool:
    """Whether the server of ``row`` (from ``servers``) is alive at ``now``: not stopped, a heartbeat
    within ``lease`` seconds and, on this host, its process there.  No row: not alive."""
    if row is None or row["stopped_at"] is not None or now - (row["heartbeat_at"] or 0.0) > lease:
        return False
    return driver_alive({"driver": {"host": row["host"], "pid": row["pid"]}}) is not False


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

    # -- servers ---------------------------------------------------------------------------

    def heartbeat(self, server_id: str, host: str, pid: int, started_at: float, schedule_ids: list[str], now: float) -> None:
        """Say that ``server_id`` is alive at ``now`` (its row written whole: one forgotten comes back)."""
        with self.runs._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO servers VALUES (?,?,?,?,?,NULL,?)",
                [server_id, host, pid, started_at, now, json.dumps(schedule_ids)],
            )

    def retire(self, server_id: str, now: float) -> None:
        with self.runs._connect() as db:
            db.execute("UPDATE servers SET stopped_at = ? WHERE server_id = ?", [now, server_id])
            db.execute(
                "DELETE FROM servers WHERE COALESCE(stopped_at, heartbeat_at) < ?", [now - FORGET_SERVERS_AFTER]
            )

    def servers(self) -> dict[str, dict]:
        with self.runs._connect() as db:
            rows = [dict(r) for r in db.execute("SELECT * FROM servers")]
        for row in rows:
            try:
                row["schedules"] = json.loads(row["schedules"] or "[]")
            except ValueError:
                row["schedules"] = []
        return {row["server_id"]: row for row in rows}

    # -- fires -----------------------------------------------------------------------------

    def claim(self, schedule_id: str, scheduled_for: float, run_id: str | None, outcome: str, server: str | None = None) -> bool:
        """Take the fire ``(schedule_id, scheduled_for)``; False when another server has it."""
        try:
            with self.runs._connect() as db:
                db.execute(
                    "INSERT INTO scheduled_runs (schedule_id, scheduled_for, run_id, outcome, at, server) "
                    "VALUES (?,?,?,?,?,?)", [schedule_id, scheduled_for, run_id, outcome, time.time(), server],
                )
            return True
        except sqlite3.IntegrityError:
            return False

    def claim_many(self, schedule_id: str, times: list[float], outcome: str, server: str | None = None) -> int:
        """Claim each of ``times`` with ``outcome``, in one transaction; how many this call took
        (a fire another server has keeps its row)."""
        if not times:
            return 0
        with self.runs._connect() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO scheduled_runs (schedule_id, scheduled_for, run_id, outcome, at, server) "
                "VALUES (?,?,NULL,?,?,?)", [[schedule_id, t, outcome, time.time(), server] for t in times],
            )
            return db.total_changes - before

    def hold(self, schedule_id: str, scheduled_for: float, outcome: str, server: str, run_id: str | None = None) -> bool:
        """Record ``outcome`` for a fire ``server`` holds; False (and nothing written) when it no longer
        holds it: it was taken over while the server was thought dead."""
        return self._record(schedule_id, scheduled_for, outcome, server, run_id, f" AND {_HELD_SQL}")

    def held_by_others(self, schedule_id: str, server: str) -> list[dict]:
        """The fires of ``schedule_id`` that another server (or an older rayflow, ``server`` NULL)
        holds and has not started, oldest first.  A ``starting`` fire whose run reached the history
        did start: its run's record tells how it ended."""
        with self.runs._connect() as db:
            return [dict(r) for r in db.execute(
                f"SELECT * FROM scheduled_runs WHERE schedule_id = ? AND {_HELD_SQL} "
                "AND (server IS NULL OR server != ?) "
                "AND NOT (outcome = 'starting' AND run_id IN (SELECT run_id FROM runs)) ORDER BY scheduled_for",
                [schedule_id, server],
            )]

    def adopt(self, schedule_id: str, scheduled_for: float, previous: str | None, server: str) -> bool:
        """Take over a held fire from ``previous`` (a dead server): True for the one server whose
        UPDATE finds it still held by ``previous``."""
        with self.runs._connect() as db:
            cursor = db.execute(
                "UPDATE scheduled_runs SET server = ?, outcome = 'claimed', at = ? "
                f"WHERE schedule_id = ? AND scheduled_for = ? AND server IS ? AND {_HELD_SQL} "
                "AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.run_id = scheduled_runs.run_id)",  # it started
                [server, time.time(), schedule_id, scheduled_for, previous],
            )
            return cursor.rowcount == 1

    def settle(self, schedule_id: str, scheduled_for: float, outcome: str, server: str, run_id: str | None = None) -> bool:
        """Record how a fire ``server`` started (or ended); False (nothing written) when another
        server took it over meanwhile: this one stalled past the lease and was thought dead."""
        return self._record(schedule_id, scheduled_for, outcome, server, run_id)

    def _record(
        self, schedule_id: str, scheduled_for: float, outcome: str, server: str | None, run_id: str | None, also: str = "",
    ) -> bool:
        """``outcome`` (and ``run_id``) written on the fire ``server`` holds, where ``also`` holds too."""
        with self.runs._connect() as db:
            cursor = db.execute(
                "UPDATE scheduled_runs SET outcome = ?, run_id = COALESCE(?, run_id), at = ? "
                f"WHERE schedule_id = ? AND scheduled_for = ? AND server IS ?{also}",
                [outcome, run_id, time.time(), schedule_id, scheduled_for, server],
            )
            return cursor.rowcount == 1

    def fires(self, schedule_id: str) -> list[dict]:
        with self.runs._connect() as db:
            return [dict(r) for r in db.execute(
                "SELECT * FROM scheduled_runs WHERE schedule_id = ? ORDER BY scheduled_for", [schedule_id])]

    def schedules(self) -> list[dict]:
        """Every schedule with its last fire's outcome and, when it started one, that run's state."""
        self.runs.settle_unfinished()  # a last run whose driver is gone reads CRASHED, written once
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
        return rows

    def late(self, now: float, grace: float = 60.0, limit: int = 20) -> list[dict]:
        """Fires whose time passed ``grace`` seconds ago without a run: a schedule's next fire its
        server never made (no server serves it now), and fires held but not started (claimed,
        queued, waiting), oldest first: ``schedule_id``, ``flow``, ``scheduled_for``, ``outcome``."""
        with self.runs._connect() as db:
            missed = [dict(r) | {"outcome": "not fired"} for r in db.execute(
                "SELECT schedule_id, flow, next_fire AS scheduled_for FROM schedules WHERE next_fire < ? "
                "ORDER BY next_fire LIMIT ?", [now - grace, limit])]
            held = [dict(r) for r in db.execute(
                "SELECT s.schedule_id, c.flow, s.scheduled_for, s.outcome FROM scheduled_runs AS s "
                f"LEFT JOIN schedules AS c ON c.schedule_id = s.schedule_id WHERE {_HELD_SQL.replace('outcome', 's.outcome')} "
                "AND s.scheduled_for < ? AND NOT (s.outcome = 'starting' AND s.run_id IN (SELECT run_id FROM runs)) "
                "ORDER BY s.scheduled_for LIMIT ?", [now - grace, limit])]
        return sorted(missed + held, key=lambda r: r["scheduled_for"])[:limit]
