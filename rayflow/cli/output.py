"""How the CLI shows a finished run: a rich table on a terminal, plain lines otherwise."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from rayflow.exceptions import RayflowError

STATE_STYLES = {"SUCCESS": "green", "SKIPPED": "cyan", "CACHED": "cyan", "MAPPED": "green", "RUNNING": "yellow"}


def _duration(state: Any) -> str:
    return "-" if state.duration is None else f"{state.duration:.3f}s"


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
    rows = [
        (key, state.type.value, str(state.attempt), _duration(state), state.message.splitlines()[0] if state.message else "")
        for key, state in flow_run.task_states.items()
    ]
    if stream.isatty():
        console = Console(file=stream)
        table = Table(title=f"flow {flow_run.flow_name} · run {flow_run.run_id}")
        for column in ("task", "state", "attempt", "duration", "message"):
            table.add_column(column)
        for key, state, attempt, duration, message in rows:
            table.add_row(key, f"[{STATE_STYLES.get(state, 'red')}]{state}[/]", attempt, duration, message)
        console.print(table)
        console.print(f"run id: {flow_run.run_id}")
        console.print(f"state: {flow_run.state.type.value} {flow_run.state.message}")
        console.print(f"result: {_result_text(flow_run)}", markup=False)
        return
    print("task\tstate\tattempt\tduration\tmessage", file=stream)
    for row in rows:
        print("\t".join(row), file=stream)
    print(f"run id: {flow_run.run_id}", file=stream)
    print(f"state: {flow_run.state.type.value} {flow_run.state.message}", file=stream)
    print(f"result: {_result_text(flow_run)}", file=stream)
