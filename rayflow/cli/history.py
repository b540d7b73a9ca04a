"""``rayflow runs`` and ``rayflow show``: the run history, as tables or JSON."""

from __future__ import annotations

import datetime
import json
import os

from rayflow.cli.output import emit_table, grouped, subflow_keys, took as _took
from rayflow.states import FAILED_TYPES

FAILED = {t.value for t in FAILED_TYPES}
JAEGER_URL = "http://localhost:16686"


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def print_runs(runs: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(runs, indent=2))
        return
    rows = [
        [
            r["run_id"], r["flow"], r["state"], _when(r["started_at"]), _took(r["started_at"], r["finished_at"]),
            f"scheduled {_when(r['scheduled_for'])}" if r.get("scheduled_for") is not None else "-", r["trace_id"] or "-",
        ]
        for r in runs
    ]
    emit_table(["run id", "flow", "state", "started", "duration", "scheduled", "trace id"], rows, title="recent runs")


def _duration(started_at: float | None, finished_at: float | None) -> float | None:
    return None if started_at is None or finished_at is None else finished_at - started_at


def task_rows(run: dict) -> list[dict]:
    """One entry per task: last state, attempts, duration, item counts for maps, last error.

    The duration is the last state's own ``started_at``..``finished_at``, what ``rayflow run``
    prints from the final state: the last attempt's run time as measured where it ran (for a
    map, the map's span); ``None`` for a task that never ran or is running now.
    """
    by_task: dict[str, dict] = {key: {"task": key, "state": "PENDING", "attempts": 0} for key in run["tasks"]}
    for t in run["transitions"]:
        entry = by_task.setdefault(t["task_key"], {"task": t["task_key"], "attempts": 0})
        entry["state"] = t["state"]
        if t["state"] == "RUNNING":
            entry["attempts"] = max(entry["attempts"], t["attempt"] or 1)
        entry["started_at"], entry["finished_at"] = t["started_at"], t["finished_at"]
        entry["duration"] = _duration(t["started_at"], t["finished_at"])
        if (t["state"] in FAILED or t["state"] == "RETRYING") and t["message"]:
            entry["error"] = t["message"]
        elif t["state"] in ("SUCCESS", "CACHED") and (t["message"] or "").startswith(("cache ", "resumed from")):
            entry["note"] = t["message"]
    chunks: dict[str, list[dict]] = {}
    for chunk in run["chunks"]:
        chunks.setdefault(chunk["task_key"], []).append(chunk)
    for key, rows in chunks.items():
        by_task.setdefault(key, {"task": key, "state": "PENDING", "attempts": 0})["items"] = map_items(rows)
    shape = run.get("graph") or {"nodes": []}
    kinds = {n["key"]: n["kind"] for n in shape["nodes"]}
    subflows = subflow_keys(list(by_task), {k for k, kind in kinds.items() if kind == "subflow"})
    order = grouped(list(by_task), subflows)
    out = []
    for key, depth in order:  # a subflow's row first, then its tasks: a group
        row = by_task[key]
        row["group"] = key.rpartition("/")[0]
        row["depth"] = depth
        row["subflow"] = key in subflows
        out.append(row)
    return out


RETRIED = ("RETRYING", "TIMED_OUT", "FAILED")  # the states an item is run again from


def item_states(chunk_rows: list[dict]) -> dict[str, int]:
    """How many items of a map are in each state now, each item counted once, in its last state.

    The history has one row per chunk *attempt*, all under the chunk's start/stop: the
    chunk's first work reports every item of the chunk, and each retry work reports only
    the items it ran again, those that were RETRYING (always run again), TIMED_OUT (always
    retryable) or FAILED (retryable).  So per chunk, in the order the works ran, a retry
    row's items are first taken out of the states they were retried from (RETRYING, then
    TIMED_OUT, then FAILED; the latest rows first), then counted in their new states.  A
    row without counts is a work lost with its worker: when it was run again, the new row
    counts its items; when it was not, its items failed.
    """
    by_chunk: dict[tuple[int, int], list[dict]] = {}
    for row in chunk_rows:
        by_chunk.setdefault((row["start"], row["stop"]), []).append(row)
    out: dict[str, int] = {}
    for (start, stop), rows in by_chunk.items():
        for state, n in _chunk_states(stop - start, rows).items():
            if n:
                out[state] = out.get(state, 0) + n
    return out


def _chunk_states(size: int, rows: list[dict]) -> dict[str, int]:
    def ran_at(row: dict) -> float:
        return row["started_at"] if row["started_at"] is not None else row["finished_at"] or 0.0

    counted = sorted((r for r in rows if r["counts"]), key=ran_at)
    lost = len(counted) < len(rows)
    if not counted:  # every work of this chunk was lost: its items failed
        return {"FAILED": size} if lost else {}
    standing: list[dict[str, int]] = []  # per row: its items not run again since
    owed = 0  # items run again, still to take out of an earlier state
    for row in counted:
        if standing:
            owed += sum(row["counts"].values())
        for state in RETRIED:
            for earlier in reversed(standing):
                taken = min(owed, earlier.get(state, 0))
                if taken:
                    earlier[state] -= taken
                    owed -= taken
        standing.append(dict(row["counts"]))
    states: dict[str, int] = {}
    for row_states in standing:
        for state, n in row_states.items():
            states[state] = states.get(state, 0) + n
    if lost and states.get("RETRYING"):  # their retry's work was lost for good
        states["FAILED"] = states.get("FAILED", 0) + states.pop("RETRYING")
    return states


def map_items(chunk_rows: list[dict]) -> dict:
    """A map's item counts: total, done (in a final state), ok, failed, skipped, and per state.

    ``ok`` is what the map's own summary calls ok (every item that did not fail, skipped
    ones included), so ``rayflow show`` and ``rayflow run`` give the same numbers.
    """
    states = item_states(chunk_rows)
    total = sum(states.values())
    failed = sum(n for s, n in states.items() if s in FAILED)
    return {
        "total": total,
        "done": total - states.get("RETRYING", 0),
        "ok": total - failed - states.get("RETRYING", 0),
        "failed": failed,
        "skipped": states.get("SKIPPED", 0),
        "cached": states.get("CACHED", 0),
        "states": dict(sorted(states.items())),
    }


def print_run(run: dict, as_json: bool) -> None:
    jaeger = os.environ.get("RAYFLOW_JAEGER_URL", JAEGER_URL).rstrip("/")
    link = f"{jaeger}/trace/{run['trace_id']}" if run["trace_id"] else None
    tasks = task_rows(run)
    if as_json:
        out = {k: v for k, v in run.items() if k not in ("transitions", "chunks")}
        print(json.dumps({**out, "trace_url": link, "task_rows": tasks, "chunks": run["chunks"]}, indent=2))
        return
    rows = []
    for t in tasks:
        items = t.get("items")
        counts = f"{items['done']} done/{items['failed']} failed/{items['skipped']} skipped" if items else ""
        if items and items["cached"]:
            counts += f"/{items['cached']} cached"
        rows.append([
            t["task"], t["state"], str(t["attempts"]), _took(t.get("started_at"), t.get("finished_at")),
            counts, (t.get("error") or "").splitlines()[0][:120] if t.get("error") else (t.get("note") or "")[:120],
        ])
    emit_table(
        ["task", "state", "attempts", "duration", "items", "error / note"], rows, title=f"flow {run['flow']} · run {run['run_id']}",
        depths=[t["depth"] for t in tasks],
    )
    print(f"run id: {run['run_id']}")
    print(f"flow: {run['flow']}  params: {json.dumps(run['params'])}")
    print(f"state: {run['state']} {run['message'] or ''}".rstrip())
    print(f"started: {_when(run['started_at'])}  duration: {_took(run['started_at'], run['finished_at'])}")
    attempts = run.get("attempts") or []
    if len(attempts) > 1:  # resumed: each attempt's outcome, the tasks above are the latest's
        print("attempts: " + ", ".join(f"{a['attempt']} {a['state']}" for a in attempts))
    print(f"trace id: {run['trace_id'] or '-'}")
    if link:
        print(f"trace: {link}")


def print_live(status: dict, as_json: bool, *, missing_from: str | None = None) -> None:
    """A live run as its actor sees it now.

    ``missing_from``: the run history that should have had this (finished) run and does not;
    the JSON then says so (``in_history: false``, ``history_db``).
    """
    if as_json:
        tasks = {key: {**task, "duration": _duration(task["started_at"], task["finished_at"])}
                 for key, task in status["tasks"].items()}
        extra = {} if missing_from is None else {"in_history": False, "history_db": missing_from}
        print(json.dumps({**status, "tasks": tasks, "live": True, **extra}, indent=2))
        return
    rows = []
    order = grouped(list(status["tasks"]))
    for key, _ in order:
        task = status["tasks"][key]
        progress = status["maps"].get(key)
        items = ""
        if progress:
            counts = progress["counts"]
            failed = sum(n for s, n in counts.items() if s in FAILED)
            total = progress["total"] if progress["total"] is not None else "?"
            items = f"{sum(counts.values())}/{total} done/{failed} failed/{counts.get('SKIPPED', 0)} skipped"
        rows.append([key, task["state"], str(task["attempt"]), _took(task["started_at"], task["finished_at"]),
                     items, (task["message"] or "").splitlines()[0][:120] if task["message"] else ""])
    title = f"flow {status['flow']} · run {status['run_id']} (live)"
    emit_table(["task", "state", "attempts", "duration", "items", "error"], rows, title=title, depths=[d for _, d in order])
    print(f"run id: {status['run_id']}")
    print(f"state: {status['state']} (live)")
