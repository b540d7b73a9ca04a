"""The ``rayflow`` command line (typer).

Exit codes: 0 the run succeeded; 1 the run failed or was cancelled, or the
run asked for is not known (``show``, ``logs``, ``cancel``: in neither the run
history nor a live driver; ``show``: ended in its driver but missing from this
RAYFLOW_HOME's run history, after printing what its driver knows); 2 bad usage
(target, parameters, flow definition, result storage; ``resume``: a run that
cannot be resumed); 3 the Ray cluster could not be reached; 130 interrupted
(Ctrl-C); 143 terminated (SIGTERM).  Either signal cancels the run first.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import importlib
import os
import sqlite3
import threading
import json
import sys
import time
from typing import Annotated, Any, Optional

import typer

from rayflow.cli.loader import TargetError, load_flow
from rayflow.cli.history import print_run as print_history_run
from rayflow.cli.graph import dot as render_dot
from rayflow.cli.graph import mermaid as render_mermaid
from rayflow.cli.history import print_live, print_runs
from rayflow.store.views import state_filter, task_rows
from rayflow.cli.output import emit_table, print_run
from rayflow.cli.limits import limit_app
from rayflow.cli.signals import exit_promptly, sigterm_as_interrupt
from rayflow.cli.states import LimitWaits, StatePrinter
from rayflow.cli.usage import fail as _fail
from rayflow.cli.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, EXPECTED, exit_code
from rayflow.cli import submit as _submit
from rayflow.core.parameters import parameter_values
from rayflow.engine.driver.flow_run import FlowRun
from rayflow.store import RunStore, rayflow_home
from rayflow.store.history import UNFINISHED
from rayflow.exceptions import ResultStoreError, RunIdError, Terminated
from rayflow.paths import check_run_id, new_run_id
from rayflow.results import ResultStore
from rayflow.results_layout import cache_folder, meta_name, parse_cache_path, strip_suffix

app = typer.Typer(
    name="rayflow",
    help="Run and inspect rayflow flows: Prefect-style workflows compiled onto Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help is plain text: rich markup would read `[[flow]]` as a tag and drop it
)

AllOption = Annotated[
    bool, typer.Option("--all", help="Every task's row (past 50 tasks the table lists those that did not succeed).")
]
TaskStateOption = Annotated[
    Optional[str], typer.Option("--state", help="Only the tasks in this state (SUCCESS, FAILED, ...).")  # noqa: UP007
]

HISTORY_GRACE = 2.0  # seconds `show` waits for a run that ended live to appear in the history


def parse_params(pairs: list[str], params_json: str | None, model: Any = None) -> dict[str, Any]:
    """``k=v`` pairs on top of a JSON object, read by the one parser (``core.parameters.parameter_values``):
    the flow's ``model`` decides, per field, whether a value's text is JSON (a str or a secret stays text)."""
    typed: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise TargetError(f"--params-json is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise TargetError("--params-json must be a JSON object")
        typed.update(loaded)
    text: dict[str, str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise TargetError(f"--param {pair!r} must look like name=value")
        text[key] = raw
    return parameter_values(model, typed=typed, text=text)


@app.command()
def run(
    target: Annotated[str, typer.Argument(help="path/to/file.py:flow_name or package.module:flow_name")],
    param: Annotated[
        Optional[list[str]],  # noqa: UP007 - typer needs Optional here
        typer.Option("--param", "-p", help="A flow parameter, name=value (repeatable). Values are JSON where possible."),
    ] = None,
    params_json: Annotated[Optional[str], typer.Option("--params-json", help="Flow parameters as a JSON object.")] = None,  # noqa: UP007
    address: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--address", help="Ray cluster to join (host:port, ray://host:10001, auto). Default: RAY_ADDRESS or a local Ray."),
    ] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Use this run id instead of a generated one.")] = None,  # noqa: UP007
    local: Annotated[bool, typer.Option("--local", help="Run in this process without Ray (for debugging).")] = False,
    log_states: Annotated[
        bool, typer.Option("--log-states", help="Print each task's state change as it happens (to stderr).")
    ] = False,
    show_all: AllOption = False,
    task_state: TaskStateOption = None,
) -> None:
    """Run a flow and print its task states, run id and result."""
    task_state = _state_option(task_state)
    run_id = _checked_run_id(run_id) if run_id is not None else new_run_id()
    try:
        flow = load_flow(target)
        values = parse_params(param or [], params_json, flow.parameters_model)
        options: dict[str, Any] = {"runner": "local" if local else "ray", "run_id": run_id}
        if address:
            options["address"] = address
        printing = StatePrinter(run_id) if log_states else StatePrinter(run_id, waits=LimitWaits())
        with sigterm_as_interrupt(f"run {run_id}"), printing:
            flow_run = flow.with_options(**options).run(**values)
    except EXPECTED as exc:
        raise _fail(str(exc), exit_code(exc)) from None
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):  # no table: Ray itself may be stopping (SIGTERM to the group)
            typer.echo(f"error: terminated (SIGTERM); run {run_id} was cancelled", err=True)
            exit_promptly(EXIT_TERMINATED)
        _print_cancelled(run_id, local)
        raise _fail(f"interrupted; run {run_id} was cancelled", EXIT_INTERRUPTED) from None
    print_run(flow_run, show_all=show_all, state=task_state)
    if not flow_run.state.is_successful():
        raise typer.Exit(EXIT_FAILED)


def _checked_run_id(run_id: str) -> str:
    """A run id given on the command line follows the rule of rayflow.paths: else one line,
    exit 2, before the flow's file is even loaded."""
    try:
        return check_run_id(run_id)
    except RunIdError as exc:
        raise _fail(str(exc), exit_code(exc)) from None


def _print_cancelled(run_id: str, local: bool) -> None:
    """After Ctrl-C the runner has cancelled the run; show where each task was stopped."""
    if local:
        return
    from rayflow.runtime import find_run

    try:
        _, summary = find_run(run_id)
    except Exception:  # noqa: BLE001 - showing the table is a courtesy; the exit code says it all
        return
    print_run(FlowRun(summary, None, lambda handles: [], tuple(summary.task_states)))


@app.command()
def cancel(
    run_id: Annotated[str, typer.Argument(help="The id of a live run.")],
    address: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--address", help="Ray cluster of the run. Default: RAY_ADDRESS, else the local cluster (auto)."),
    ] = None,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for the run to end cancelled.")] = 30.0,
) -> None:
    """Cancel a live run from another shell: its Ray tasks are stopped and unfinished tasks end CANCELLED.

    With --address http://HEAD:8265, a submitted run: its job is stopped (its driver cancels the run)."""
    from rayflow.runtime import cancel_run

    if _submit.is_job_address(address):
        return _submit.cancel_job(run_id, address, wait)

    try:
        state = cancel_run(run_id, address=address, wait=wait)
    except EXPECTED as exc:
        raise _fail(str(exc), exit_code(exc)) from None
    typer.echo(f"run {run_id}: {state.type.value}")
    if not state.is_finished():
        raise _fail(f"run {run_id} had not ended after {wait:g}s", EXIT_FAILED)


def _state_option(state: str | None) -> str | None:
    """A --state value: a state a run or task can read (CRASHED too), else one line, exit 2."""
    try:
        return state_filter(state)
    except ValueError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None


def _history_errors(command: Any) -> Any:
    """A history that cannot be used (RAYFLOW_HOME a file, a damaged history.db, a locked one):
    one line naming it, exit 2, never an sqlite traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:  # `rayflow runs | head`: the reader had enough
            raise
        except (sqlite3.Error, OSError) as exc:  # a file, a path that cannot be made or written
            raise _fail(f"cannot use the run history at {rayflow_home()}: {exc}", EXIT_USAGE) from None

    return wrapper


@app.command()
@_history_errors
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
    state = _state_option(state)
    if _submit.is_job_address(address):
        argv = ["runs", "--limit", str(limit), *(["--flow", flow] if flow else []), *(["--state", state] if state else [])]
        return _submit.query_history(address, argv + (["--json"] if as_json else []))
    print_runs(RunStore().runs(flow=flow, state=state, limit=limit), as_json)


@app.command()
@_history_errors
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
    task_state = _state_option(task_state)
    rows = {"show_all": show_all, "state": task_state}
    if _submit.is_job_address(address):
        if watch:
            raise _fail(f"--watch needs the run's history here; follow a submitted run with `rayflow logs {run_id} --address {address} --follow`", EXIT_USAGE)
        extra = (["--json"] if as_json else []) + (["--all"] if show_all else []) + (["--state", task_state] if task_state else [])
        return _submit.query_history(address, ["show", run_id, *extra])
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
                raise _fail(f"no run {run_id!r} in the run history at {store.path}, nor live", EXIT_FAILED)
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
        raise _fail(
            f"run {run_id} ended {live['state']} in its driver but {where} the run history at {store.path} "
            "(was it started with another RAYFLOW_HOME, or could its history not be written?)",
            EXIT_FAILED,
        )


@app.command()
@_history_errors
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
    if _submit.is_job_address(address):
        return _submit.print_job_logs(run_id, address, follow)
    store = RunStore()
    if store.run(run_id) is None:
        raise _fail(f"no run {run_id!r} in the run history at {store.path}", EXIT_FAILED)
    after = 0

    def print_new() -> None:
        nonlocal after
        for record in store.logs(run_id, task=task, after=after):
            after = record["row"]
            where = record["task_key"] + (f"[{record['map_index']}]" if record["map_index"] is not None else "")
            stamp = datetime.datetime.fromtimestamp(record["at"]).strftime("%H:%M:%S.%f")[:-3]
            typer.echo(f"{stamp} {record['level']:<7} {where}: {record['message']}")

    while True:
        print_new()
        run = store.run(run_id)
        if not follow or run["state"] not in ("PENDING", "RUNNING"):
            print_new()  # the last records land with the final state
            return
        time.sleep(interval)


@app.command()
def graph(
    target: Annotated[
        Optional[str],  # noqa: UP007
        typer.Argument(help="path/to/file.py:flow_name or package.module:flow_name (optional with --run)"),
    ] = None,
    param: Annotated[
        Optional[list[str]],  # noqa: UP007
        typer.Option("--param", "-p", help="A flow parameter, name=value (repeatable): the graph is traced with these values."),
    ] = None,
    params_json: Annotated[Optional[str], typer.Option("--params-json", help="Flow parameters as a JSON object.")] = None,  # noqa: UP007
    fmt: Annotated[str, typer.Option("--format", help="mermaid or dot.")] = "mermaid",
    run_id: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--run", help="Draw the graph this run executed, coloured by its tasks' states."),
    ] = None,
) -> None:
    """A flow's graph for the given parameters (mapped tasks and subflows marked), or the graph a run executed."""
    if fmt not in ("mermaid", "dot"):
        raise _fail(f"--format must be mermaid or dot, not {fmt!r}", EXIT_USAGE)
    if target is None and run_id is None:
        raise _fail("give a TARGET (path/to/file.py:flow_name), or --run RUN_ID", EXIT_USAGE)
    states: dict[str, str] = {}
    shape = None
    if run_id is not None:
        run = RunStore().run(run_id)
        if run is None:
            raise _fail(f"no run {run_id!r} in the run history", EXIT_FAILED)
        states = {row["task"]: row["state"] for row in task_rows(run)}
        shape = run.get("graph")
        if shape is None and target is None:
            raise _fail(
                f"run {run_id} has no stored graph (recorded by an older rayflow); give TARGET and its --param values",
                EXIT_FAILED,
            )
    if shape is None:
        try:
            flow = load_flow(target)
            values = parse_params(param or [], params_json, flow.parameters_model)
            shape = flow.graph_for(**values).shape()
        except EXPECTED as exc:
            raise _fail(str(exc), exit_code(exc)) from None
    print(render_mermaid(shape, states) if fmt == "mermaid" else render_dot(shape, states))


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="The run to resume (FAILED, CANCELLED, or crashed).")],
    param: Annotated[
        Optional[list[str]],  # noqa: UP007
        typer.Option("--param", "-p", help="Override a recorded parameter, name=value (repeatable)."),
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="Run in this process without Ray.")] = False,
) -> None:
    """Run a failed run again: tasks whose results it persisted are loaded, the rest run."""
    from rayflow import resume as resume_run

    _checked_run_id(run_id)  # a run an older rayflow recorded under an id the rule refuses, too
    try:
        flow = _recorded_flow(run_id)  # its model reads -p as run's -p does (a str stays text)
        overrides = parse_params(param or [], None, flow.parameters_model if flow is not None else None)
        if local and flow is not None:
            flow = flow.with_options(runner="local")
        flow_run = resume_run(run_id, flow, **overrides)
    except EXPECTED as exc:
        raise _fail(str(exc), exit_code(exc)) from None
    print_run(flow_run)
    if not flow_run.state.is_successful():
        raise typer.Exit(EXIT_FAILED)


def _recorded_flow(run_id: str) -> Any:
    """The flow run ``run_id`` recorded (its target), or None where it cannot be loaded here:
    ``rf.resume`` then says why (an unknown run, no target, a target that fails to load)."""
    try:
        target = ((RunStore().run(run_id) or {}).get("graph") or {}).get("target")
        return load_flow(target) if target else None
    except Exception:  # noqa: BLE001 - resume names the problem itself
        return None


cache_app = typer.Typer(help="The result cache: list or clear cached task results.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
app.add_typer(limit_app, name="limit")

StorageOption = Annotated[
    Optional[str],  # noqa: UP007
    typer.Option("--storage", help="Result storage (directory or URI). Default: RAYFLOW_RESULTS, else RAYFLOW_HOME/results."),
]
FlowFilter = Annotated[Optional[str], typer.Option("--flow", help="Only this flow's entries.")]  # noqa: UP007
TaskFilter = Annotated[Optional[str], typer.Option("--task", help="Only this task key's entries.")]  # noqa: UP007


def _cache_entries(storage: str | None, flow: str | None, task: str | None) -> tuple[ResultStore, list[tuple[str, str, str, Any]]]:
    """(store, [(flow, task key, cache key, StoredFile)]) under cache/<flow>/<task key>/<key>.<suffix>."""
    try:
        store = ResultStore(storage)
        files = list(store.list(cache_folder(flow or "")))
    except (ResultStoreError, OSError) as exc:
        raise _fail(f"cannot read the result storage: {exc}", EXIT_USAGE) from None
    entries = []
    for info in files:
        entry = parse_cache_path(info.path)  # None: an entry's .meta.json, a stray file
        if entry is not None and (flow is None or entry.flow_name == flow) and (task is None or entry.task_key == task):
            entries.append((entry.flow_name, entry.task_key, entry.key, info))
    return store, sorted(entries, key=lambda e: (e[0], e[1], e[3].mtime or 0))


@cache_app.command("ls")
def cache_ls(storage: StorageOption = None, flow: FlowFilter = None, task: TaskFilter = None) -> None:
    """List cached results: flow, task, key, bytes, when written (tab-separated)."""
    _, entries = _cache_entries(storage, flow, task)
    for entry_flow, entry_task, key, info in entries:
        written = datetime.datetime.fromtimestamp(info.mtime).isoformat(timespec="seconds") if info.mtime else "-"
        print(f"{entry_flow}\t{entry_task}\t{key}\t{info.size}\t{written}")


@cache_app.command("clear")
def cache_clear(storage: StorageOption = None, flow: FlowFilter = None, task: TaskFilter = None) -> None:
    """Remove cached results (all, or a flow's, or a task's): those tasks run again next time."""
    store, entries = _cache_entries(storage, flow, task)
    removed = 0
    for _, _, _, info in entries:
        removed += store.delete(info.path)
        store.delete(meta_name(strip_suffix(info.path)))
    print(f"removed {removed} cached result(s) from {store.location}")


# -- schedules -------------------------------------------------------------------------------

CronOption = Annotated[Optional[str], typer.Option("--cron", help="A cron expression (or @hourly, @daily, ...).")]  # noqa: UP007
IntervalOption = Annotated[Optional[float], typer.Option("--interval", help="Fire every SECONDS (1 to 1e10).")]  # noqa: UP007
TimezoneOption = Annotated[Optional[str], typer.Option("--timezone", help="IANA timezone of the schedule (default UTC).")]  # noqa: UP007


@app.command()
def serve(
    target: Annotated[Optional[str], typer.Argument(help="path/to/file.py:flow_name or package.module:flow_name")] = None,  # noqa: UP007
    cron: CronOption = None,
    interval: IntervalOption = None,
    timezone: TimezoneOption = None,
    param: Annotated[
        Optional[list[str]],  # noqa: UP007
        typer.Option("--param", "-p", help="A flow parameter, name=value (repeatable)."),
    ] = None,
    overlap: Annotated[Optional[str], typer.Option("--overlap", help="skip (default), queue, allow or cancel_running.")] = None,  # noqa: UP007
    catchup: Annotated[Optional[str], typer.Option("--catchup", help="skip (default), latest or all: fires missed while no server ran, or held by one that died.")] = None,  # noqa: UP007
    max_catchup: Annotated[Optional[int], typer.Option("--max-catchup", help="With --catchup all: at most this many.")] = None,  # noqa: UP007
    config: Annotated[Optional[str], typer.Option("--config", help="Serve the [[flow]] entries of this TOML file.")] = None,  # noqa: UP007
    max_concurrent: Annotated[Optional[int], typer.Option("--max-concurrent", help="Runs at once in this server (default 4).")] = None,  # noqa: UP007
    grace: Annotated[Optional[float], typer.Option("--grace", help="Seconds runs may finish in after SIGTERM (default 30).")] = None,  # noqa: UP007
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join. Default: RAY_ADDRESS or a local Ray.")] = None,  # noqa: UP007
    once: Annotated[bool, typer.Option("--once", help="Fire what is due now, wait for those runs, exit (fires since the last server are missed: see --catchup).")] = False,
    with_ui: Annotated[bool, typer.Option("--ui", help="Serve the web UI too, with actions: run now, cancel, resume.")] = False,
    ui_host: Annotated[str, typer.Option("--ui-host", help="Address of the UI.")] = "127.0.0.1",
    ui_port: Annotated[int, typer.Option("--ui-port", help="Port of the UI.", min=1, max=65535)] = 4200,
    ui_token_file: UITokenFileOption = None,
    ui_allowed_host: UIAllowedHostOption = None,
) -> None:
    """Fire flows on their schedules as runs on Ray, until SIGTERM/SIGINT (exit 0)."""
    from rayflow.cli.serve import check_server_options, config_entries, schedule_from
    from rayflow.exceptions import ScheduleError

    ui_token = _ui_settings(ui_host, "--ui-host", ui_token_file, ui_allowed_host or []) if with_ui else None
    try:
        if config is not None:
            given = {
                "TARGET": target, "--cron": cron, "--interval": interval, "--timezone": timezone, "--param": param,
                "--overlap": overlap, "--catchup": catchup, "--max-catchup": max_catchup,
            }
            clash = [name for name, value in given.items() if value]
            if clash:
                raise ScheduleError(f"with --config FILE the schedules are the file's: {', '.join(clash)} cannot be given too")
            found, server = config_entries(config)
        else:
            if target is None:
                raise ScheduleError("give TARGET with --cron or --interval, or --config FILE")
            flow = load_flow(target)
            values = parse_params(param or [], None, flow.parameters_model)
            schedule = schedule_from(cron, interval, timezone, overlap=overlap, catchup=catchup, max_catchup=max_catchup)
            found, server = [(flow, schedule, values, target)], {}
        serving = importlib.import_module("rayflow.serving")
        entries = [e for flow, schedule, values, where in found for e in serving.served(flow, schedule, values, target=where)]
        options = {
            "max_concurrent": max_concurrent if max_concurrent is not None else server.get("max_concurrent", 4),
            "grace": grace if grace is not None else server.get("grace", 30.0),
            "address": address or server.get("address"),
        }
        check_server_options(options, "")
        actions = _start_ui(ui_host, ui_port, [e.flow for e in entries], ui_token, ui_allowed_host or []) if with_ui else None
        code = serving.serve(entries, once=once, on_ready=actions.mark_ready if actions else None, **options)
    except EXPECTED as exc:
        raise _fail(str(exc), exit_code(exc)) from None
    _exit_past_abandoned_threads(code)
    raise typer.Exit(code)


def _listen_check(host: str, port: int) -> None:
    """A port in use, or an address that cannot be bound: one line, before anything starts."""
    from rayflow.ui.server import check_port

    try:
        check_port(host, port)
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_USAGE) from None


UITokenFileOption = Annotated[
    Optional[str],  # noqa: UP007
    typer.Option(
        "--ui-token-file", "--token-file",
        help="A file holding the UI's token (one line); else RAYFLOW_UI_TOKEN. Required with a --ui-host beyond loopback.",
    ),
]
UIAllowedHostOption = Annotated[
    Optional[list[str]],  # noqa: UP007
    typer.Option(
        "--ui-allowed-host", "--allowed-host",
        help="A Host name the UI answers besides loopback and --ui-host (repeatable; *.example.com).",
    ),
]


def _ui_settings(host: str, option: str, token_file: str | None, allowed: list[str]) -> str | None:
    """The UI's token, checked with its address before anything starts: a bad token file, or a
    UI beyond loopback without a token, is one line, exit 2.  The token leaves the environment
    here, so nothing this process starts (Ray, its workers) inherits it."""
    from rayflow.ui.security import TOKEN_ENV, SetupError, check_allowed_host, check_exposure, read_token

    environ = {TOKEN_ENV: _ui_token_from_env} if _ui_token_from_env is not None else {}
    try:
        token = read_token(token_file, {**environ, **os.environ})
        check_exposure(host, token, option, "--ui-token-file" if option == "--ui-host" else "--token-file")
        for pattern in allowed:
            check_allowed_host(pattern)
    except SetupError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    os.environ.pop(TOKEN_ENV, None)
    return token


def _start_ui(host: str, port: int, flows: list[Any], token: str | None, allowed: list[str]) -> Any:
    """The UI of ``rayflow serve --ui``, in a thread of the server: with actions on its flows,
    which answer "starting" until the server has joined Ray (its ``mark_ready``)."""
    from rayflow.ui.actions import ServeActions
    from rayflow.ui.server import serve_in_background

    _listen_check(host, port)
    unique = list({f.name: f for f in flows}.values())
    actions = ServeActions(unique, ready=False)
    serve_in_background(rayflow_home(), host, port, actions, token=token, allowed_hosts=allowed)
    typer.echo(f"rayflow serve: UI at http://{host}:{port}/{' (with a token)' if token else ''}", err=True)
    return actions


def _exit_past_abandoned_threads(code: int) -> None:
    """A cancelled in-process run leaves its tasks' threads running until their functions return
    (threads cannot be killed), and Python would wait for them at exit: the server exits now."""
    from rayflow.engine.driver.local_executor import THREAD_PREFIX

    lingering = [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX) and t.is_alive()]
    if not lingering:
        return
    typer.echo(f"rayflow serve: exiting past {len(lingering)} task thread(s) of cancelled in-process runs", err=True)
    atexit._run_exitfuncs()  # what a normal exit runs (trace flushes, ray.shutdown), then no thread joins
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


schedule_app = typer.Typer(help="Schedules: preview the fire times of one.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("preview")
def schedule_preview(
    target: Annotated[str, typer.Argument(help="path/to/file.py:flow_name or package.module:flow_name")],
    cron: CronOption = None,
    interval: IntervalOption = None,
    timezone: TimezoneOption = None,
    n: Annotated[int, typer.Option("-n", help="How many fire times (at most 10000).", min=1)] = 10,
) -> None:
    """Print the next fire times, in the schedule's timezone and in UTC (tab-separated), each as it is computed."""
    from rayflow.cli.serve import check_preview_count, preview_lines, schedule_from

    try:
        check_preview_count(n)
        load_flow(target)
        schedule = schedule_from(cron, interval, timezone)
    except EXPECTED as exc:
        raise _fail(str(exc), exit_code(exc)) from None
    for line in preview_lines(schedule, n):
        print(line, flush=True)


@app.command("schedules")
@_history_errors
def list_schedules(as_json: Annotated[bool, typer.Option("--json", help="As JSON.")] = False) -> None:
    """Every schedule a server registered: its flow, next fire time and last run's state."""
    from rayflow.cli.serve import schedule_rows
    from rayflow.store.schedules import ScheduleStore

    found = ScheduleStore(RunStore()).schedules()
    if as_json:
        print(json.dumps(found, indent=2, default=str))
        return
    emit_table(["schedule", "flow", "rule", "next fire", "last run", "target"], schedule_rows(found), title="schedules")


@app.command()
def ui(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.", min=1, max=65535)] = 4200,
    token_file: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--token-file", help="A file holding the UI's token (one line); else RAYFLOW_UI_TOKEN. Required with a --host beyond loopback."),
    ] = None,
    allowed_host: Annotated[
        Optional[list[str]],  # noqa: UP007
        typer.Option("--allowed-host", help="A Host name the UI answers besides loopback and --host (repeatable; *.example.com)."),
    ] = None,
) -> None:
    """Serve the web UI (read-only) over RAYFLOW_HOME's run history."""
    from rayflow.ui.server import serve as serve_ui

    token = _ui_settings(host, "--host", token_file, allowed_host or [])
    _listen_check(host, port)
    typer.echo(f"rayflow ui: http://{host}:{port}/ over {rayflow_home() / 'history.db'}{' (with a token)' if token else ''}", err=True)
    serve_ui(rayflow_home(), host, port, token=token, allowed_hosts=allowed_host or [])


app.command()(_submit.submit)


@app.callback()
def _root() -> None:
    """rayflow: Prefect-style workflows compiled onto Ray."""


_ui_token_from_env: str | None = None  # RAYFLOW_UI_TOKEN, taken out of the environment by ``main``


def main() -> None:
    from rayflow.cli.usage import run_app  # usage errors in one line too

    global _ui_token_from_env
    # The UI's token leaves the environment before any command runs: no Ray, worker, job
    # (``submit`` forwards RAYFLOW_* settings) or flow this process starts inherits it.
    _ui_token_from_env = os.environ.pop("RAYFLOW_UI_TOKEN", None)

    sys.exit(run_app(app, "rayflow"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
