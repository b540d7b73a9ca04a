"""``rayflow run``, ``resume``, ``cancel`` and ``graph``: the commands that start, stop or draw
a flow run.  Their exceptions end them by the table of ``rayflow.cli.exits`` (each is
registered through ``exits.handled``); what they import beyond typer, they import when run."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from rayflow.cli.common import (
    AllOption,
    ParamOption,
    ParamsJsonOption,
    TaskStateOption,
    checked_run_id,
    parse_params,
    state_option,
)
from rayflow.cli.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE
from rayflow.cli.usage import fail


def run(
    target: Annotated[str, typer.Argument(help="path/to/file.py:flow_name or package.module:flow_name")],
    param: ParamOption = None,
    params_json: ParamsJsonOption = None,
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
    from rayflow.cli.loader import load_flow
    from rayflow.cli.output import print_run
    from rayflow.cli.signals import exit_promptly, sigterm_as_interrupt
    from rayflow.cli.states import LimitWaits, StatePrinter
    from rayflow.exceptions import Terminated
    from rayflow.paths import new_run_id

    task_state = state_option(task_state)
    run_id = checked_run_id(run_id) if run_id is not None else new_run_id()
    try:
        flow = load_flow(target)
        values = parse_params(param or [], params_json, flow.parameters_model)
        options: dict[str, Any] = {"runner": "local" if local else "ray", "run_id": run_id}
        if address:
            options["address"] = address
        printing = StatePrinter(run_id) if log_states else StatePrinter(run_id, waits=LimitWaits())
        with sigterm_as_interrupt(f"run {run_id}"), printing:
            flow = flow.with_options(**options)
            if flow.options.runner == "ray":  # on a known cluster, its actor starts while the engine loads here
                from rayflow.runtime.driver.warm import start_actor

                start_actor(flow.options)
            flow_run = flow.run(**values)
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):  # no table: Ray itself may be stopping (SIGTERM to the group)
            typer.echo(f"error: terminated (SIGTERM); run {run_id} was cancelled", err=True)
            exit_promptly(EXIT_TERMINATED)
        _print_cancelled(run_id, local)
        raise fail(f"interrupted; run {run_id} was cancelled", EXIT_INTERRUPTED) from None
    print_run(flow_run, show_all=show_all, state=task_state)
    if not flow_run.state.is_successful():
        raise typer.Exit(EXIT_FAILED)


def _print_cancelled(run_id: str, local: bool) -> None:
    """After Ctrl-C the runner has cancelled the run; show where each task was stopped."""
    if local:
        return
    from rayflow.cli.output import print_run
    from rayflow.engine.driver.flow_run import FlowRun
    from rayflow.runtime import find_run

    try:
        _, summary = find_run(run_id)
    except Exception:  # noqa: BLE001 - showing the table is a courtesy; the exit code says it all
        return
    print_run(FlowRun(summary, None, lambda handles: [], tuple(summary.task_states)))


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
    from rayflow.cli import submit

    if submit.is_job_address(address):
        return submit.cancel_job(run_id, address, wait)
    from rayflow.runtime import cancel_run

    state = cancel_run(run_id, address=address, wait=wait)
    typer.echo(f"run {run_id}: {state.type.value}")
    if not state.is_finished():
        raise fail(f"run {run_id} had not ended after {wait:g}s", EXIT_FAILED)


def graph(
    target: Annotated[
        Optional[str],  # noqa: UP007
        typer.Argument(help="path/to/file.py:flow_name or package.module:flow_name (optional with --run)"),
    ] = None,
    param: Annotated[
        Optional[list[str]],  # noqa: UP007
        typer.Option("--param", "-p", help="A flow parameter, name=value (repeatable): the graph is traced with these values."),
    ] = None,
    params_json: ParamsJsonOption = None,
    fmt: Annotated[str, typer.Option("--format", help="mermaid or dot.")] = "mermaid",
    run_id: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--run", help="Draw the graph this run executed, coloured by its tasks' states."),
    ] = None,
) -> None:
    """A flow's graph for the given parameters (mapped tasks and subflows marked), or the graph a run executed."""
    if fmt not in ("mermaid", "dot"):
        raise fail(f"--format must be mermaid or dot, not {fmt!r}", EXIT_USAGE)
    if target is None and run_id is None:
        raise fail("give a TARGET (path/to/file.py:flow_name), or --run RUN_ID", EXIT_USAGE)
    from rayflow.cli.graph import dot, mermaid

    states: dict[str, str] = {}
    shape = None
    if run_id is not None:
        from rayflow.store import RunStore
        from rayflow.store.views import task_rows

        run = RunStore().run(run_id)
        if run is None:
            raise fail(f"no run {run_id!r} in the run history", EXIT_FAILED)
        states = {row["task"]: row["state"] for row in task_rows(run)}
        shape = run.get("graph")
        if shape is None and target is None:
            raise fail(
                f"run {run_id} has no stored graph (recorded by an older rayflow); give TARGET and its --param values",
                EXIT_FAILED,
            )
    if shape is None:
        from rayflow.cli.loader import load_flow

        flow = load_flow(target)
        values = parse_params(param or [], params_json, flow.parameters_model)
        from rayflow.core.fusion import plan_fusion

        graph = flow.graph_for(**values)
        shape = graph.shape() | {"fused": [list(c) for c in plan_fusion(graph.nodes, flow.options).chains]}
    print(mermaid(shape, states) if fmt == "mermaid" else dot(shape, states))


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
    from rayflow.cli.output import print_run

    checked_run_id(run_id)  # a run an older rayflow recorded under an id the rule refuses, too
    flow = _recorded_flow(run_id)  # its model reads -p as run's -p does (a str stays text)
    overrides = parse_params(param or [], None, flow.parameters_model if flow is not None else None)
    if local and flow is not None:
        flow = flow.with_options(runner="local")
    flow_run = resume_run(run_id, flow, **overrides)
    print_run(flow_run)
    if not flow_run.state.is_successful():
        raise typer.Exit(EXIT_FAILED)


def _recorded_flow(run_id: str) -> Any:
    """The flow of run ``run_id`` as ``rf.resume`` finds it, its target loaded as every command
    loads one (a module from the current directory first); None where it recorded no target
    (``rf.resume`` then says why).  A run that cannot be resumed is refused first, as there."""
    from rayflow.cli.loader import load_flow
    from rayflow.runs.resume import check_resumable, find_flow

    run = check_resumable(run_id)[1]
    recorded = run.get("graph") or {}
    return find_flow(run_id, run["flow"], recorded, load_flow) if recorded.get("target") else None
