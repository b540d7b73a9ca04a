"""``rayflow runs`` and ``rayflow show``: the run history, as tables or JSON."""

from __future__ import annotations

import json

from rayflow.cli.output import emit_table, print_tasks
from rayflow.presentation import duration as _duration, took as _took, when as _when
from rayflow.store.task_table import live_rows
from rayflow.store.views import run_record, task_rows, trace_url


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
    if as_json:
        print(json.dumps(run_record(run), indent=2))
        return
    title = f"flow {run['flow']} · run {run['run_id']}"
    print_tasks(task_rows(run), title, show_all=show_all, state=state)
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
    title = f"flow {status['flow']} · run {status['run_id']} (live)"
    print_tasks(live_rows(status), title, show_all=show_all, state=state)
    print(f"run id: {status['run_id']}")
    print(f"state: {status['state']} (live)")
