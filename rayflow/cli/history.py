"""``rayflow runs`` and ``rayflow show``: the run history, as tables or JSON."""

from __future__ import annotations

import json

from rayflow.cli.output import emit_table, pick_rows
from rayflow.presentation import FAILED, duration as _duration, took as _took, when as _when
from rayflow.store.views import grouped, run_record, task_rows, trace_url


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


def print_run(run: dict, as_json: bool, *, show_all: bool = False, state: str | None = None) -> None:
    link = trace_url(run["trace_id"])
    tasks = task_rows(run)
    if as_json:
        print(json.dumps(run_record(run), indent=2))
        return
    rows = []
    for t in tasks:
        items = t.get("items")
        counts = f"{items['done']} done/{items['failed']} failed/{items['skipped']} skipped" if items else ""
        if items and items["cached"]:
            counts += f"/{items['cached']} cached"
        rows.append([
            t["task"], t["state"], str(t["attempts"]), _took(t.get("started_at"), t.get("finished_at")),
            counts, (t.get("error") or t.get("note") or "").split("\n", 1)[0][:120],
        ])
    chosen, summary = pick_rows([t["state"] for t in tasks], show_all=show_all, state=state)
    emit_table(
        ["task", "state", "attempts", "duration", "items", "error / note"], [rows[i] for i in chosen],
        title=f"flow {run['flow']} · run {run['run_id']}", depths=[tasks[i]["depth"] for i in chosen],
    )
    if summary:
        print(summary)
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


def print_live(
    status: dict, as_json: bool, *, missing_from: str | None = None, show_all: bool = False, state: str | None = None
) -> None:
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
    chosen, summary = pick_rows([row[1] for row in rows], show_all=show_all, state=state)
    emit_table(
        ["task", "state", "attempts", "duration", "items", "error"], [rows[i] for i in chosen], title=title,
        depths=[order[i][1] for i in chosen],
    )
    if summary:
        print(summary)
    print(f"run id: {status['run_id']}")
    print(f"state: {status['state']} (live)")
