"""How the CLI shows tables and a finished run: rich tables on a terminal, plain lines otherwise."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from rayflow.exceptions import RayflowError
from rayflow.store.views import grouped

STATE_STYLES = {"SUCCESS": "green", "SKIPPED": "cyan", "CACHED": "cyan", "MAPPED": "green", "RUNNING": "yellow"}


def emit_table(
    headers: list[str],
    rows: list[list[str]],
    *,
    title: str | None = None,
    stream: Any = None,
    state_column: int | None = None,
    depths: list[int] | None = None,
) -> None:
    """A rich table on a terminal (``state_column`` coloured by state), tab-separated lines otherwise.

    ``depths`` indents the first cell of each row on a terminal (a subflow's tasks under it);
    the tab-separated lines keep cells exact, for scripts.
    """
    stream = stream or sys.stdout
    if not stream.isatty():
        print("\t".join(headers), file=stream)
        for row in rows:
            print("\t".join(row), file=stream)
        return
    table = Table(title=title)
    for header in headers:
        table.add_column(header)
    for i, row in enumerate(rows):
        cells = list(row)
        if depths is not None and depths[i]:
            cells[0] = "  " * depths[i] + cells[0]
        if state_column is not None:
            state = cells[state_column]
            cells[state_column] = f"[{STATE_STYLES.get(state, 'red')}]{state}[/]"
        table.add_row(*cells)
    Console(file=stream).print(table)


def took(started_at: float | None, finished_at: float | None) -> str:
    """A span as the CLI prints it everywhere: seconds with three decimals, ``-`` when not known."""
    return "-" if started_at is None or finished_at is None else f"{finished_at - started_at:.3f}s"


def _duration(state: Any) -> str:
    """A task's duration: its final state's ``started_at``..``finished_at`` (``State.duration``).

    For a task that ran, that is the last attempt's run time as measured where it ran (not its
    time in the queue, nor earlier attempts); for a map, the map's own span.  ``rayflow show``
    and the live view print the same from the same two timestamps.
    """
    return took(state.started_at, state.finished_at)


def _result_text(flow_run: Any) -> str:
    try:
        value = flow_run.result()
    except RayflowError as exc:
        return f"(no result: {exc})"
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def print_run(flow_run: Any, *, stream: Any = None) -> None:
    stream = stream or sys.stdout
    order = grouped(list(flow_run.task_states))
    rows = []
    for key, _ in order:
        state = flow_run.task_states[key]
        rows.append([key, state.type.value, str(state.attempt), _duration(state), state.message.splitlines()[0] if state.message else ""])
    title = f"flow {flow_run.flow_name} · run {flow_run.run_id}"
    emit_table(
        ["task", "state", "attempt", "duration", "message"], rows, title=title, stream=stream, state_column=1,
        depths=[d for _, d in order],
    )
    print(f"run id: {flow_run.run_id}", file=stream)
    print(f"state: {flow_run.state.type.value} {flow_run.state.message}", file=stream)
    print(f"result: {_result_text(flow_run)}", file=stream)

