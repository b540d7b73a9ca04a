"""``rayflow runs`` and ``rayflow show``: the run history, as tables or JSON; a map's item rows
(``show``, ``logs --item``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rayflow.cli.output import emit_table, print_tasks
from rayflow.presentation import duration as _duration, took as _took, when as _when
from rayflow.state_types import error_text
from rayflow.store.task_table import live_rows
from rayflow.store.views import run_record, task_rows, trace_url

if TYPE_CHECKING:
    from rayflow.store import RunStore


def print_runs(runs: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(runs, indent=2))
        return
    rows = [
        [
            r["run_id"], r["flow"], r["state"] + (f" ({r['waiting']} waiting for approval)" if r.get("waiting") else ""),
            _when(r["started_at"]), _took(r["started_at"], r["finished_at"]),
            f"scheduled {_when(r['scheduled_for'])}" if r.get("scheduled_for") is not None else "-",
            ",".join(r.get("sla") or ()) or "-", r["trace_id"] or "-",
        ]
        for r in runs
    ]
    emit_table(["run id", "flow", "state", "started", "duration", "scheduled", "sla", "trace id"], rows, title="recent runs")


def print_run(
    run: dict, as_json: bool, *, show_all: bool = False, state: str | None = None, store: RunStore | None = None
) -> None:
    """A run from the history: its task table, then (given its ``store``) its maps' item rows."""
    link = trace_url(run["trace_id"])
    if as_json:
        print(json.dumps(run_record(run), indent=2))
        return
    title = f"flow {run['flow']} · run {run['run_id']}"
    print_tasks(task_rows(run), title, show_all=show_all, state=state)
    if store is not None:
        print_map_items(store, run["run_id"], map_keys(run), store.item_counts(run["run_id"]))
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
    status: dict, as_json: bool, *, missing_from: str | None = None, show_all: bool = False, state: str | None = None,
    store: RunStore | None = None,
) -> None:
    """A live run as its actor sees it now; given the ``store`` its recorder writes, below the task
    table its maps' item rows recorded so far, as ``print_run`` shows a finished run's (the JSON's
    ``failed_items``: the first ``ITEMS_SHOWN`` of them).

    ``missing_from``: the run history that should have had this (finished) run and does not;
    the JSON then says so (``in_history: false``, ``history_db``).
    """
    rows = live_rows(status)
    maps = [r["task"] for r in rows if r["task"] in status["maps"]]
    counts = store.item_counts(status["run_id"]) if store is not None and maps else {}
    if as_json:
        tasks = {key: {**task, "duration": _duration(task["started_at"], task["finished_at"])}
                 for key, task in status["tasks"].items()}
        extra = {} if missing_from is None else {"in_history": False, "history_db": missing_from}
        failed = [{"task_key": task, **row} for task in maps if counts.get(task)
                  for row in store.items(status["run_id"], task, limit=ITEMS_SHOWN)]
        print(json.dumps({**status, "tasks": tasks, "live": True, "failed_items": failed, **extra}, indent=2))
        return
    title = f"flow {status['flow']} · run {status['run_id']} (live)"
    print_tasks(rows, title, show_all=show_all, state=state)
    if counts:
        print_map_items(store, status["run_id"], maps, counts)
    print(f"run id: {status['run_id']}")
    print(f"state: {status['state']} (live)")


# -- a map's item rows: what the engine recorded per item that did not succeed or ran again --

ITEMS_SHOWN = 20  # per map, below `show`'s task table; `show RUN --items MAP` pages the rest
ITEM_COLUMNS = ["item", "state", "attempts", "error"]


def _one_line(text: str) -> str:
    return " ".join(text.split())  # a table's cell: no tab or newline of a message breaks its row


def item_cells(row: dict) -> list[str]:
    """An item row's cells: its index, final state, attempts and "Type: message" (its message alone
    without an error type: a skip's reason; "-" without either: retried, then succeeded)."""
    error = error_text(row["error_type"], row["message"] or "") if row["error_type"] else (row["message"] or "-")
    return [str(row["item"]), row["state"], str(row["attempts"] or "-"), _one_line(error)]


def map_keys(run: dict) -> list[str]:
    """The run's maps, in the order of its task table (a map with chunk rows counts, whatever its graph)."""
    kinds = {n["key"]: n["kind"] for n in (run.get("graph") or {"nodes": []})["nodes"]}
    chunked = {c["task_key"] for c in run["chunks"]}
    return [r["task"] for r in task_rows(run) if kinds.get(r["task"]) == "map" or r["task"] in chunked]


def print_map_items(store: RunStore, run_id: str, maps: list[str], counts: dict[str, int]) -> None:
    """Below the task table: per map of ``maps`` with item rows (``counts``, from ``RunStore.item_counts``),
    its first ``ITEMS_SHOWN`` rows (one ``RunStore.items`` page) and how many more, with how to page them."""
    for task in [k for k in maps if counts.get(k)]:
        rows = store.items(run_id, task, limit=ITEMS_SHOWN)
        print(f"items of {task} that did not succeed or ran again: {counts[task]}")
        emit_table(ITEM_COLUMNS, [item_cells(r) for r in rows], title=f"items of {task}", state_column=1)
        if counts[task] > len(rows):
            print(f"{counts[task] - len(rows)} more: rayflow show {run_id} --items {task} --after {rows[-1]['item']}")


def print_items_page(
    store: RunStore, run: dict, task: str, *, state: str | None, after: int, limit: int, as_json: bool
) -> None:
    """One page of map ``task``'s item rows (one ``RunStore.items`` call: ``limit`` + 1 rows, the
    extra one only saying whether there are more), and the command for the next page."""
    rows = store.items(run["run_id"], task, state=state, after=after, limit=limit + 1)
    more, rows = len(rows) > limit, rows[:limit]
    next_after = rows[-1]["item"] if more else None
    if as_json:
        print(json.dumps({"run_id": run["run_id"], "task": task, "state": state, "items": rows, "next_after": next_after}, indent=2))
        return
    which = f"in state {state}" if state else "that did not succeed or ran again"
    print(f"items of {task} {which}" + (f" after {after}" if after >= 0 else "") + f": {len(rows)} on this page")
    emit_table(ITEM_COLUMNS, [item_cells(r) for r in rows], title=f"items of {task}", state_column=1)
    if more:
        also = f" --item-state {state}" if state else ""
        print(f"more: rayflow show {run['run_id']} --items {task}{also} --after {next_after} --limit {limit}")


def item_row(store: RunStore, run_id: str, task: str, item: int) -> dict | None:
    """Map ``task``'s recorded row of ``item`` (None: none recorded), one ``RunStore.items`` call."""
    rows = store.items(run_id, task, after=item - 1, limit=1)
    return rows[0] if rows and rows[0]["item"] == item else None


def print_item_row(row: dict | None, task: str, item: int, *, finished: bool) -> None:
    """What the history recorded of one map item: state, attempts, error and traceback."""
    if row is None:
        kept = "the history keeps a row only for an item that did not succeed or ran again"
        print(f"item {item} of {task}: no row recorded " + (f"(it succeeded on its first attempt: {kept})" if finished else f"yet ({kept})"))
        return
    print(f"item {item} of {task}: {row['state']} after {row['attempts'] or '-'} attempt(s)")
    if row["error_type"] or row["message"]:
        print("error: " + (error_text(row["error_type"], row["message"] or "") if row["error_type"] else row["message"]))
    if row["traceback"]:
        print("traceback:")
        print(row["traceback"].rstrip("\n"))
