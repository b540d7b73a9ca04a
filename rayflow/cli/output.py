"""How the CLI shows tables and a finished run: rich tables on a terminal, plain lines otherwise."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from rayflow.exceptions import RayflowError
from rayflow.presentation import SUCCEEDED, styled, took
from rayflow.store.views import grouped

# A run's task table lists every task up to this many; past it, the counts by state and the
# tasks that did not succeed (at most this many of them), unless --all or --state asks for more.
ROWS_AT_MOST = 50


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
            cells[state_column] = styled(cells[state_column])
        table.add_row(*cells)
    Console(file=stream).print(table)


def pick_rows(states: list[str], *, show_all: bool = False, state: str | None = None) -> tuple[list[int], str | None]:
    """Which rows of a run's task table to print (their positions, in order), given each row's
    state, and a line saying what the table leaves out (None: nothing).  ``run`` and ``show``
    (live or from the history) choose the same way."""
    n = len(states)
    if state is not None:
        chosen = [i for i, s in enumerate(states) if s == state]
        return chosen, f"{len(chosen)} of {n} tasks are {state}"
    if show_all or n <= ROWS_AT_MOST:
        return list(range(n)), None
    counts = sorted(Counter(states).items(), key=lambda kv: (-kv[1], kv[0]))
    others = [i for i, s in enumerate(states) if s not in SUCCEEDED]
    chosen = others[:ROWS_AT_MOST]
    listed = (
        "none listed: every task succeeded" if not others
        else f"listed: the {len(others)} that did not succeed" if len(chosen) == len(others)
        else f"listed: the first {len(chosen)} of the {len(others)} that did not succeed"
    )
    summary = f"{n} tasks: {', '.join(f'{c} {s}' for s, c in counts)}; {listed} (--all: every task, --state STATE: those in STATE)"
    return chosen, summary


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


def print_run(flow_run: Any, *, stream: Any = None, show_all: bool = False, state: str | None = None) -> None:
    stream = stream or sys.stdout
    order = grouped(list(flow_run.task_states))
    rows = []
    for key, _ in order:
        task_state = flow_run.task_states[key]
        rows.append([
            key, task_state.type.value, str(task_state.attempt), _duration(task_state),
            task_state.message.splitlines()[0] if task_state.message else "",
        ])
    chosen, summary = pick_rows([row[1] for row in rows], show_all=show_all, state=state)
    title = f"flow {flow_run.flow_name} · run {flow_run.run_id}"
    emit_table(
        ["task", "state", "attempt", "duration", "message"], [rows[i] for i in chosen], title=title, stream=stream,
        state_column=1, depths=[order[i][1] for i in chosen],
    )
    if summary:
        print(summary, file=stream)
    print(f"run id: {flow_run.run_id}", file=stream)
    print(f"state: {flow_run.state.type.value} {flow_run.state.message}", file=stream)
    print(f"result: {_result_text(flow_run)}", file=stream)
