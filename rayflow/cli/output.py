"""How the CLI shows tables and a finished run: rich tables on a terminal (rich imported only then),
plain lines otherwise."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

from rayflow.exceptions import RayflowError
from rayflow.presentation import SUCCEEDED, styled
from rayflow.store.task_table import COLUMNS, STATE_COLUMN, cells, flow_run_rows

# A run's task table lists every task up to this many; past it, the counts by state and the
# tasks that did not succeed (at most this many of them), unless --all or --state asks for more.
ROWS_AT_MOST = 50


def control_free(text: str) -> str:
    """``text`` for a terminal: its control characters (escape sequences that would move the cursor,
    clear the screen, retitle the window or make links) as ``?``; line breaks and tabs kept."""
    return "".join("?" if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0 else c for c in text)


def terminal_safe(text: str) -> str:
    """``text`` made ``control_free`` when stdout is a terminal; a pipe gets it exact."""
    return control_free(text) if sys.stdout.isatty() else text


_CELL_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def tsv_cell(text: str) -> str:
    """A cell of a tab-separated line: a backslash, tab, newline or carriage return in it written
    ``\\\\``, ``\\t``, ``\\n``, ``\\r`` (as PostgreSQL's COPY and ``mysql --batch`` do), so each row
    stays one line of exactly as many cells as the header."""
    return text.translate(_CELL_ESCAPES)


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
        print("\t".join(map(tsv_cell, headers)), file=stream)
        for row in rows:
            print("\t".join(map(tsv_cell, row)), file=stream)
        return
    from rich.console import Console  # rich only for a terminal: a pipe's plain lines do without it
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for header in headers:
        table.add_column(header)
    for i, row in enumerate(rows):
        cells = [escape(control_free(cell)) for cell in row]  # a name or an artifact's cell is text, not markup
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


def _result_text(flow_run: Any) -> str:
    try:
        value = flow_run.result()
    except RayflowError as exc:
        return f"(no result: {exc})"
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def print_tasks(tasks: list[dict], title: str, *, stream: Any = None, show_all: bool = False, state: str | None = None) -> None:
    """A run's task table (``rayflow.store.task_table``: its columns, cells and order) from its
    task rows, those ``pick_rows`` chooses, and the line saying what it leaves out.  ``run``,
    ``show`` and ``show`` of a live run all print through this."""
    stream = stream or sys.stdout
    chosen, summary = pick_rows([t["state"] for t in tasks], show_all=show_all, state=state)
    emit_table(
        list(COLUMNS), [cells(tasks[i]) for i in chosen], title=title, stream=stream,
        state_column=STATE_COLUMN, depths=[tasks[i]["depth"] for i in chosen],
    )
    if summary:
        print(summary, file=stream)


def print_run(flow_run: Any, *, stream: Any = None, show_all: bool = False, state: str | None = None) -> None:
    """A finished run as ``rayflow run`` prints it.  A task's duration is its final state's
    ``started_at``..``finished_at``: the last attempt's run time as measured where it ran (a
    map's: its own span), what ``rayflow show`` prints from the history."""
    stream = stream or sys.stdout
    title = f"flow {flow_run.flow_name} · run {flow_run.run_id}"
    print_tasks(flow_run_rows(flow_run), title, stream=stream, show_all=show_all, state=state)
    print(f"run id: {flow_run.run_id}", file=stream)
    print(f"state: {flow_run.state.type.value} {flow_run.state.message}", file=stream)
    print(f"result: {_result_text(flow_run)}", file=stream)
