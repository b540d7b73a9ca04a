"""``rayflow runs``, ``show``, ``logs`` and ``schedules``: the commands that read the run
history (or a live run's driver).  Each is registered through ``exits.handled`` and
``exits.history_errors``; what they import beyond typer, they import when run."""

from __future__ import annotations

import json
import time
from typing import Annotated, Optional

import typer

from rayflow.cli.common import AllOption, TaskStateOption, state_option
from rayflow.cli.exits import EXIT_FAILED, EXIT_USAGE
from rayflow.cli.usage import fail

HISTORY_GRACE = 2.0  # seconds `show` waits for a run that ended live to appear in the history


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
        return submit.query_history(address, argv + (["--json"] if as_json else []))
    print_runs(RunStore().runs(flow=flow, state=state, limit=limit), as_json)


def show(
    run_id: Annotated[str, typer.Argument(help="The run to show.")],
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until the run has finished.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts (every task, whatever --all and --state).")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes with --watch.")] = 1.0,
    show_all: AllOption = False,
    task_state: TaskStateOption = None,
    address: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--address", help="Ray cluster of a live run (default: RAY_ADDRESS, else the local cluster), or a job server, http://HEAD:8265."),
    ] = None,
) -> None:
    """A run's tasks: states, attempts, durations, item counts of maps, errors, and its trace.

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
    rows = {"show_all": show_all, "state": task_state}
    if submit.is_job_address(address):
        if watch:
            raise fail(f"--watch needs the run's history here; follow a submitted run with `rayflow logs {run_id} --address {address} --follow`", EXIT_USAGE)
        extra = (["--json"] if as_json else []) + (["--all"] if show_all else []) + (["--state", task_state] if task_state else [])
        return submit.query_history(address, ["show", run_id, *extra])
    store = RunStore()
    settle_by: float | None = None
    while True:
        run = store.run(run_id)
        if run is not None and run["state"] not in UNFINISHED:
            print_history_run(run, as_json, **rows)
            return
        from rayflow.runtime import live_status

        status = live_status(run_id, address=address)
        live = None if status is None else status.as_dict()
        if live is None:
            if run is None:
                raise fail(f"no run {run_id!r} in the run history at {store.path}, nor live", EXIT_FAILED)
            print_history_run(run, as_json, **rows)  # no live driver has it any more: the history's last word
            return
        if live["state"] in UNFINISHED:
            print_live(live, as_json, **rows)
            if not watch:
                return
            time.sleep(interval)
            continue
        # It ended in its actor, which writes the history before the run ends, so the history
        # has it at once, unless it is written elsewhere (another RAYFLOW_HOME) or not at all.
        if settle_by is None:
            settle_by = time.monotonic() + HISTORY_GRACE
        if time.monotonic() < settle_by:
            time.sleep(0.2)
            continue
        print_live(live, as_json, missing_from=str(store.path), **rows)
        where = "is missing from" if run is None else f"is still {run['state']} in"
        raise fail(
            f"run {run_id} ended {live['state']} in its driver but {where} the run history at {store.path} "
            "(was it started with another RAYFLOW_HOME, or could its history not be written?)",
            EXIT_FAILED,
        )


def logs(
    run_id: Annotated[str, typer.Argument(help="The run whose logs to print.")],
    task: Annotated[Optional[str], typer.Option("--task", help="Only this task's records.")] = None,  # noqa: UP007
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records until the run ends.")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between polls with --follow.")] = 0.5,
    address: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--address", help="A submitted run's job server, http://HEAD:8265: print its job's output."),
    ] = None,
) -> None:
    """Log records of a run: rf.get_run_logger() records and captured prints, from every worker."""
    from rayflow.cli import submit
    from rayflow.presentation import UNFINISHED, clock
    from rayflow.store import RunStore

    if submit.is_job_address(address):
        return submit.print_job_logs(run_id, address, follow)
    store = RunStore()
    if store.run(run_id) is None:
        raise fail(f"no run {run_id!r} in the run history at {store.path}", EXIT_FAILED)
    after = 0

    def print_new() -> None:
        nonlocal after
        for record in store.logs(run_id, task=task, after=after):
            after = record["row"]
            where = record["task_key"] + (f"[{record['map_index']}]" if record["map_index"] is not None else "")
            typer.echo(f"{clock(record['at'])} {record['level']:<7} {where}: {record['message']}")

    while True:
        print_new()
        run = store.run(run_id)
        if not follow or run["state"] not in UNFINISHED:
            print_new()  # the last records land with the final state
            return
        time.sleep(interval)


def schedules(as_json: Annotated[bool, typer.Option("--json", help="As JSON.")] = False) -> None:
    """Every schedule a server registered: its flow, next fire time and last run's state."""
    from rayflow.cli.output import emit_table
    from rayflow.cli.serve import schedule_rows
    from rayflow.store import RunStore
    from rayflow.store.schedules import ScheduleStore

    found = ScheduleStore(RunStore()).schedules()
    if as_json:
        print(json.dumps(found, indent=2, default=str))
        return
    emit_table(["schedule", "flow", "rule", "next fire", "last run", "target"], schedule_rows(found), title="schedules")
