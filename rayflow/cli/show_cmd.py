"""``rayflow runs``, ``show``, ``logs`` and ``schedules``: the commands that read the run
history (or a live run's driver).  Each is registered through ``exits.handled`` and
``exits.history_errors``; what they import beyond typer, they import when run."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from rayflow.cli.common import AllOption, TaskStateOption, state_option
from rayflow.cli.exits import EXIT_FAILED, EXIT_USAGE
from rayflow.cli.usage import fail

if TYPE_CHECKING:
    from rayflow.store import RunStore

HISTORY_GRACE = 2.0  # seconds `show` waits for a run that ended live to appear in the history
ITEMS_PAGE = 50  # `show --items MAP`: item rows per page, unless --limit


def runs(
    flow: Annotated[Optional[str], typer.Option("--flow", help="Only runs of this flow.")] = None,  # noqa: UP007
    state: Annotated[Optional[str], typer.Option("--state", help="Only runs in this state, as `show` reads it (CRASHED: its driver is gone).")] = None,  # noqa: UP007
    limit: Annotated[int, typer.Option("--limit", help="At most this many runs, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    address: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--address", help="A cluster's job server, http://HEAD:8265: the runs in its head node's history."),
    ] = None,
) -> None:
    """A table of recent runs from the run history (RAYFLOW_HOME), or a cluster's with --address."""
    from rayflow.cli import submit
    from rayflow.cli.history import print_runs
    from rayflow.store import RunStore

    state = state_option(state)
    if submit.is_job_address(address):
        argv = ["runs", "--limit", str(limit), *(["--flow", flow] if flow else []), *(["--state", state] if state else [])]
        submit.query_history(address, argv + (["--json"] if as_json else []))
        return
    from rayflow.store.approvals import with_waiting

    store = RunStore()
    print_runs(with_waiting(store, store.runs(flow=flow, state=state, limit=limit)), as_json)


def show(
    run_id: Annotated[str, typer.Argument(help="The run to show.")],
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until the run has finished.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts (every task, whatever --all and --state).")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes with --watch.")] = 1.0,
    show_all: AllOption = False,
    task_state: TaskStateOption = None,
    items: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--items", metavar="MAP", help="Only a page of this map's item rows (those that did not succeed or ran again)."),
    ] = None,
    item_state: Annotated[Optional[str], typer.Option("--item-state", help="With --items: only the items in this state (FAILED, SKIPPED, ...).")] = None,  # noqa: UP007
    after: Annotated[Optional[int], typer.Option("--after", help="With --items: the items after this index (the last one of the page before).")] = None,  # noqa: UP007
    limit: Annotated[int, typer.Option("--limit", help="With --items: at most this many items.")] = ITEMS_PAGE,
    address: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--address", help="Ray cluster of a live run (default: RAY_ADDRESS, else the local cluster), or a job server, http://HEAD:8265."),
    ] = None,
) -> None:
    """A run's tasks: states, attempts, durations, item counts of maps, errors, and its trace;
    below the table, per map, the first 20 of its item rows (those that did not succeed or ran
    again: index, state, attempts, error), with --items MAP a page of them.

    A live run is read from its driver's actor; a finished one from the run history.  A
    task's duration is its last attempt's run time as measured where it ran (a map's: its
    span), the same number `rayflow run` prints.  A run that ended in its actor but is not
    in this RAYFLOW_HOME's history is shown as the actor saw it, and the command exits 1.
    With --address http://HEAD:8265, the run as the cluster's head node has it (a submitted run).
    """
    from rayflow.cli import submit
    from rayflow.cli.history import print_live
    from rayflow.cli.history import print_run as print_history_run
    from rayflow.presentation import UNFINISHED
    from rayflow.store import RunStore

    task_state = state_option(task_state)
    page = _item_page(items, item_state, after, limit, watch)
    rows = {"show_all": show_all, "state": task_state}
    if submit.is_job_address(address):
        if watch:
            raise fail(f"--watch needs the run's history here; follow a submitted run with `rayflow logs {run_id} --address {address} --follow`", EXIT_USAGE)
        extra = (["--json"] if as_json else []) + (["--all"] if show_all else []) + (["--state", task_state] if task_state else [])
        if page is not None:
            extra += ["--items", page["task"], "--after", str(page["after"]), "--limit", str(page["limit"])]
            extra += ["--item-state", page["state"]] if page["state"] else []
        submit.query_history(address, ["show", run_id, *extra])
        return
    store = RunStore()
    if page is not None:
        return _show_items(store, run_id, page, as_json)
    settle_by: float | None = None
    while True:
        run = store.run(run_id)
        if run is not None and run["state"] not in UNFINISHED:
            print_history_run(run, as_json, store=store, **rows)
            return
        from rayflow.runtime import live_status

        status = live_status(run_id, address=address)
        live = None if status is None else status.as_dict()
        if live is None:
            if run is None:
                raise fail(f"no run {run_id!r} in the run history at {store.path}, nor live", EXIT_FAILED)
            print_history_run(run, as_json, store=store, **rows)  # no live driver has it any more: the history's last word
            return
        if live["state"] in UNFINISHED:
            print_live(live, as_json, store=store, **rows)
            if not watch:
                return
            sys.stdout.flush()  # each refresh as it is made, into a pipe too
            time.sleep(interval)
            continue
        # It ended in its actor, which writes the history before the run ends, so the history
        # has it at once, unless it is written elsewhere (another RAYFLOW_HOME) or not at all.
        if settle_by is None:
            settle_by = time.monotonic() + HISTORY_GRACE
        if time.monotonic() < settle_by:
            time.sleep(0.2)
            continue
        print_live(live, as_json, missing_from=str(store.path), store=store, **rows)
        where = "is missing from" if run is None else f"is still {run['state']} in"
        raise fail(
            f"run {run_id} ended {live['state']} in its driver but {where} the run history at {store.path} "
            "(was it started with another RAYFLOW_HOME, or could its history not be written?)",
            EXIT_FAILED,
        )


def _item_page(task: str | None, state: str | None, after: int | None, limit: int, watch: bool) -> dict | None:
    """The page of item rows --items asks for (None: the run), or one line and exit 2."""
    if task is None:
        given = [name for name, value in (("--item-state", state), ("--after", after)) if value is not None]
        given += ["--limit"] if limit != ITEMS_PAGE else []
        if given:
            raise fail(f"{' and '.join(given)} page a map's items: give the map with --items MAP", EXIT_USAGE)
        return None
    if watch:
        raise fail("--items reads a page of the run history: it does not --watch", EXIT_USAGE)
    if after is not None and not 0 <= after <= 2**62:  # past SQLite's integers: one line, not a traceback
        raise fail(f"--after is an item index, 0 to {2**62}, not {after}", EXIT_USAGE)
    if not 1 <= limit <= 10**6:
        raise fail(f"--limit is 1 to {10**6}, not {limit}", EXIT_USAGE)
    return {"task": task, "state": state_option(state, "--item-state"), "after": -1 if after is None else after, "limit": limit}


def _show_items(store: RunStore, run_id: str, page: dict, as_json: bool) -> None:
    """`show RUN --items MAP`: one page of the map's item rows, from the run history."""
    from rayflow.cli.history import map_keys, print_items_page

    run = store.run(run_id)
    if run is None:
        raise fail(f"no run {run_id!r} in the run history at {store.path}", EXIT_FAILED)
    maps = map_keys(run)
    if page["task"] not in maps:
        known = "a task, not a map" if page["task"] in run["tasks"] else "no such task"
        raise fail(f"--items {page['task']!r}: run {run_id} has {known} (its maps: {', '.join(maps) or 'none'})", EXIT_USAGE)
    print_items_page(store, run, page["task"], state=page["state"], after=page["after"], limit=page["limit"], as_json=as_json)


def logs(
    run_id: Annotated[str, typer.Argument(help="The run whose logs to print.")],
    task: Annotated[Optional[str], typer.Option("--task", help="Only this task's records.")] = None,  # noqa: UP007
    item: Annotated[
        Optional[int],  # noqa: UP007
        typer.Option("--item", help="With --task MAP: only this map item's records, then its recorded row (state, attempts, error, traceback)."),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records until the run ends.")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between polls with --follow.")] = 0.5,
    address: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--address", help="A submitted run's job server, http://HEAD:8265: print its job's output."),
    ] = None,
) -> None:
    """Log records of a run: rf.get_run_logger() records and captured prints, from every worker.

    With --task MAP --item N: item N's records, then what the history recorded of it (an item
    that did not succeed or ran again: its state, attempts, error and traceback)."""
    from rayflow.cli import submit
    from rayflow.cli.output import terminal_safe
    from rayflow.presentation import UNFINISHED, clock
    from rayflow.store import RunStore

    if item is not None:
        if task is None:
            raise fail("--item needs --task MAP, the map the item belongs to", EXIT_USAGE)
        if item < 0:
            raise fail(f"--item is a map index, 0 or more, not {item}", EXIT_USAGE)
        if submit.is_job_address(address):
            raise fail("--item reads the run history here; --address prints a submitted run's job output", EXIT_USAGE)
    if submit.is_job_address(address):
        return submit.print_job_logs(run_id, address, follow)
    store = RunStore()
    run = store.run(run_id)
    if run is None:
        raise fail(f"no run {run_id!r} in the run history at {store.path}", EXIT_FAILED)
    if item is not None:
        _check_item(run, task, item)
    after = 0

    def print_new() -> None:
        nonlocal after
        for record in store.logs(run_id, task=task, after=after, item=item):
            after = record["row"]
            where = (record["task_key"] or "flow") + (f"[{record['map_index']}]" if record["map_index"] is not None else "")
            typer.echo(terminal_safe(f"{clock(record['at'])} {record['level']:<7} {where}: {record['message']}"))

    if follow and run["state"] in UNFINISHED:  # nothing may come for a while: say what it waits for
        typer.echo(f"following the logs of run {run_id} ({run['state']}) until it ends; Ctrl-C stops", err=True)
    while True:
        print_new()
        run = store.run(run_id)
        if not follow or run["state"] not in UNFINISHED:
            print_new()  # the last records land with the final state
            if item is not None:
                from rayflow.cli.history import item_row, print_item_row

                print_item_row(item_row(store, run_id, task, item), task, item, finished=run["state"] not in UNFINISHED)
            return
        time.sleep(interval)


def _check_item(run: dict, task: str, item: int) -> None:
    """``logs --task MAP --item N``: MAP a map of the run and N one of its items (in a run that
    ended, its chunk rows say how many), else one line and exit 2."""
    from rayflow.cli.history import map_keys
    from rayflow.presentation import UNFINISHED
    from rayflow.store.views import map_items

    maps = map_keys(run)
    if task not in maps:
        known = "a task, not a map" if task in run["tasks"] else "no such task"
        raise fail(f"--task {task!r}: run {run['run_id']} has {known}, and --item needs a map (its maps: {', '.join(maps) or 'none'})", EXIT_USAGE)
    total = map_items([c for c in run["chunks"] if c["task_key"] == task])["total"]
    if run["state"] not in UNFINISHED and item >= total:
        raise fail(f"--item {item}: map {task} of run {run['run_id']} has {total} items (0 to {total - 1})" if total
                   else f"--item {item}: map {task} of run {run['run_id']} has no items", EXIT_USAGE)


def schedules(as_json: Annotated[bool, typer.Option("--json", help="As JSON.")] = False) -> None:
    """Every schedule a server registered: its flow, next fire time and last run's state."""
    from rayflow.cli.output import emit_table
    from rayflow.cli.serve import schedule_rows
    from rayflow.store import RunStore
    from rayflow.store.schedules import ScheduleStore

    from rayflow.store.sla import of_schedules

    store = RunStore()
    found = ScheduleStore(store).schedules()
    misses = of_schedules(store)
    for row in found:
        row["sla_misses"] = misses.get(row["schedule_id"], {})
    if as_json:
        print(json.dumps(found, indent=2, default=str))
        return
    emit_table(["schedule", "flow", "rule", "next fire", "last run", "sla misses", "target"], schedule_rows(found), title="schedules")
