"""The dashboard's and a flow page's reads: runs counted by start time and state, the flows whose
runs failed, the runs live now with their progress, a flow's recent runs with its tasks' states.

Each reads along an index, whatever the history's size: ``runs_by_state`` (state, started_at,
flow) covers the counts of a time range by state, ``runs_by_flow`` (flow, started_at, state,
finished_at) a flow's runs, ``runs_unfinished`` the live ones; a run's rows are read for the
few runs shown (live ones, a flow's last runs), never for the range.  The states are the ones
recorded; task states come from ``views.task_rows``, as on a run's page.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rayflow.presentation import ACTIVE, FAILED_CATEGORY, RUN_STATES, category
from rayflow.store.schema import UNFINISHED
from rayflow.store.views import task_rows

if TYPE_CHECKING:
    from rayflow.store.history import RunStore

FAILING = tuple(s for s in RUN_STATES if category(s) == FAILED_CATEGORY)  # a run that failed: FAILED, CRASHED
_FAILING_SQL = "(" + ", ".join(repr(s) for s in FAILING) + ")"
LIVE_SHOWN = 20  # live runs read with their progress; the rest are counted


STATES_SQL = (
    "WITH RECURSIVE s(name) AS (SELECT MIN(state) FROM runs UNION ALL "
    "SELECT (SELECT MIN(state) FROM runs WHERE state > s.name) FROM s WHERE s.name IS NOT NULL) "
    "SELECT name FROM s WHERE name IS NOT NULL"
)


def states(db: Any) -> list[str]:
    """The states the runs table holds: one index search per state (runs_by_state), not a pass."""
    return [r[0] for r in db.execute(STATES_SQL)]


def counts_by_bucket(store: RunStore, start: float, bucket: float, n: int) -> list[dict[str, int]]:
    """How many runs started in each of ``n`` buckets of ``bucket`` seconds from ``start``, by state:
    a count of a range of runs_by_state per state and bucket (its entries only, no run row read,
    nothing sorted)."""
    out: list[dict[str, int]] = [{} for _ in range(n)]
    query = "SELECT COUNT(*) FROM runs WHERE state = ? AND started_at >= ? AND started_at < ?"
    with store._connect() as db:
        for state in states(db):
            for b in range(n):
                found = db.execute(query, [state, start + b * bucket, start + (b + 1) * bucket]).fetchone()[0]
                if found:
                    out[b][state] = found
    return out


def failing_flows(store: RunStore, since: float, limit: int = 10) -> list[dict]:
    """The flows with runs that failed (FAILED, CRASHED) among those started since ``since``, most
    failures first: each with ``failures`` and ``by_state`` (how many of each), ``runs`` (all its runs
    since then), its last failed run (``run_id``, ``started_at``, ``message``) and its latest run's
    state (``latest``)."""
    by_flow: dict[str, dict[str, int]] = {}
    with store._connect() as db:
        for r in db.execute(  # +flow, +state: along runs_by_state's range, not a pass over runs_by_flow
            f"SELECT flow, state, COUNT(*) AS n FROM runs WHERE started_at >= ? AND state IN {_FAILING_SQL} "
            "GROUP BY +flow, +state", [since],
        ):
            by_flow.setdefault(r["flow"], {})[r["state"]] = r["n"]
        ranked = sorted(by_flow.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:limit]
        found = [
            {"flow": flow, "failures": sum(n.values()), "by_state": {s: n[s] for s in FAILING if s in n}} for flow, n in ranked
        ]
        for row in found:  # a few index searches per flow shown
            row["runs"] = db.execute(
                "SELECT COUNT(*) FROM runs WHERE flow = ? AND started_at >= ?", [row["flow"], since],
            ).fetchone()[0]
            last = db.execute(
                "SELECT run_id, started_at, message FROM runs WHERE flow = ? AND started_at >= ? "
                f"AND state IN {_FAILING_SQL} ORDER BY started_at DESC LIMIT 1", [row["flow"], since],
            ).fetchone()
            row.update(dict(last) if last is not None else {})
            latest = db.execute(
                "SELECT state FROM runs WHERE flow = ? ORDER BY started_at DESC LIMIT 1", [row["flow"]],
            ).fetchone()
            row["latest"] = latest["state"] if latest is not None else None
    return found


def progress(run: dict) -> dict:
    """A run's progress from its recorded rows: tasks done of its tasks (subflows' own rows left out),
    and for its maps the items their chunks recorded (done, failed)."""
    rows = [r for r in task_rows(run) if not r.get("subflow")]
    items = [r["items"] for r in rows if r.get("items")]
    return {
        "tasks": len(rows),
        "done": sum(1 for r in rows if r["state"] not in ACTIVE),
        "failed": sum(1 for r in rows if category(r["state"]) == FAILED_CATEGORY),
        "running": [r["task"] for r in rows if r["state"] in ("RUNNING", "RETRYING")][:5],
        "items_done": sum(i["done"] for i in items),
        "items_failed": sum(i["failed"] for i in items),
        "maps": len(items),
    }


def live_runs(store: RunStore, limit: int = LIVE_SHOWN) -> tuple[list[dict], int]:
    """The runs live now (PENDING, RUNNING; along runs_unfinished), newest first, each with its
    ``progress``; and how many there are.  Unfinished runs whose driver is gone are settled first."""
    store.settle_unfinished()
    with store._connect() as db:
        total = db.execute(f"SELECT COUNT(*) FROM runs WHERE state IN {UNFINISHED}").fetchone()[0]
        runs = [dict(r) for r in db.execute(
            f"SELECT run_id, flow, state, started_at, tasks, attempt FROM runs WHERE state IN {UNFINISHED} "
            "ORDER BY started_at DESC LIMIT ?", [limit],
        )]
        for run in runs:
            run["tasks"] = json.loads(run["tasks"])
            _rows_of(db, run)
            run["progress"] = progress(run)
    return runs, total


def _rows_of(db: Any, run: dict) -> None:
    """``run``'s latest attempt's transitions and chunk counts, as task_rows reads them."""
    args = [run["run_id"], run["attempt"]]
    run["transitions"] = [dict(r) for r in db.execute(
        "SELECT task_key, state, attempt, message, started_at, finished_at FROM transitions "
        "WHERE run_id = ? AND run_attempt = ? ORDER BY rowid", args)]
    run["chunks"] = [{"task_key": r["task_key"], "counts": json.loads(r["counts"] or "{}")} for r in db.execute(
        "SELECT task_key, counts FROM chunks WHERE run_id = ? AND run_attempt = ?", args)]


def flow_exists(store: RunStore, flow: str) -> bool:
    with store._connect() as db:
        return db.execute("SELECT 1 FROM runs WHERE flow = ? LIMIT 1", [flow]).fetchone() is not None


def flows_latest(store: RunStore, limit: int = 30) -> list[tuple[str, list[dict]]]:
    """Each flow of the history (sorted) with its last ``limit`` runs, newest first (run_id, state,
    started_at): one search of runs_by_flow per flow, whatever the history's size and however long
    ago a flow last ran."""
    store.settle_unfinished()
    with store._connect() as db:
        return [(flow, [dict(r) for r in db.execute(
            "SELECT run_id, state, started_at FROM runs WHERE flow = ? ORDER BY started_at DESC LIMIT ?", [flow, limit],
        )]) for flow in store.flows()]


def flow_runs(store: RunStore, flow: str, limit: int = 30) -> list[dict]:
    """The flow's last ``limit`` runs, oldest first, each with its tasks' ``task_rows`` (state per
    task, as its run's page shows them): the rows of a flow's grid."""
    store.settle_unfinished()
    with store._connect() as db:
        runs = [dict(r) for r in db.execute(
            "SELECT run_id, flow, state, message, started_at, finished_at, tasks, attempt FROM runs "
            "WHERE flow = ? ORDER BY started_at DESC LIMIT ?", [flow, limit],
        )]
        for run in runs:
            run["tasks"] = json.loads(run["tasks"])
            _rows_of(db, run)
            run["task_rows"] = task_rows(run)
            del run["transitions"], run["chunks"]
    return runs[::-1]


def flow_outcomes(store: RunStore, flow: str, since: float) -> list[tuple[str, float, float | None]]:
    """(state, started_at, finished_at) of each of the flow's runs started since ``since``: read
    from runs_by_flow alone (a covering index: no run row is read)."""
    with store._connect() as db:
        return [tuple(r) for r in db.execute(
            "SELECT state, started_at, finished_at FROM runs WHERE flow = ? AND started_at >= ?",
            [flow, since],
        )]
