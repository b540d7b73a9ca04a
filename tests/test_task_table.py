"""A run's task table has one definition (``rayflow.store.task_table``): ``rayflow run``,
``rayflow show`` (from the history, and live) and the UI's run page show the same columns in
the same order, the tasks in the same order (a subflow's row, then its tasks), and the same
cells for what they all know.  Before, there were three definitions with different columns
(``run``: attempt/message; ``show``: attempts/items/error / note; live: error)."""

from __future__ import annotations

import html
import io
import re

import pytest
from starlette.testclient import TestClient

import rayflow as rf
from rayflow.cli.history import print_live
from rayflow.cli.history import print_run as print_history_run
from rayflow.cli.output import print_run
from rayflow.store import RunStore
from rayflow.store.task_table import COLUMNS
from rayflow.ui import create_app


@rf.task(retries=1)
def shaky(path: str) -> int:
    import pathlib

    marker = pathlib.Path(path)
    if not marker.exists():
        marker.write_text("")
        raise RuntimeError("first attempt fails")
    return 1


@rf.task
def halve(x: int) -> int:
    if x == 3:
        raise ValueError("three is odd")
    return x // 2


@rf.flow
def inside(n: int = 4) -> int:
    return halve(n)


@rf.flow(runner="local")
def table_flow(path: str):
    return {"shaky": shaky(path), "items": halve.with_options(min_success_ratio=0.5).map(range(4)), "inner": inside(3)}


def _table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("task\t"))
    rows = []
    for line in lines[start + 1 :]:
        if "\t" not in line:
            break
        rows.append(line.split("\t"))
    return lines[start].split("\t"), rows


@pytest.fixture
def finished(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    flow_run = table_flow.run(path=str(tmp_path / "marker"))
    return tmp_path, flow_run, RunStore(tmp_path).run(flow_run.run_id)


def test_run_show_live_and_the_ui_share_one_task_table(finished, capsys):
    home, flow_run, recorded = finished
    out = io.StringIO()
    print_run(flow_run, stream=out)
    run_header, run_rows = _table(out.getvalue())
    print_history_run(recorded, as_json=False)
    show_header, show_rows = _table(capsys.readouterr().out)
    status = {
        "run_id": flow_run.run_id, "flow": "table_flow", "state": "RUNNING", "maps": {},
        "tasks": {
            key: {"state": s.type.value, "attempt": s.attempt, "started_at": s.started_at,
                  "finished_at": s.finished_at, "message": s.message}
            for key, s in flow_run.task_states.items()
        },
    }
    print_live(status, as_json=False)
    live_header, live_rows = _table(capsys.readouterr().out)
    page = TestClient(create_app(home), base_url="http://127.0.0.1:4200").get(f"/runs/{flow_run.run_id}").text
    tasks_table = page.split("<h2>Tasks</h2>", 1)[1].split("</table>", 1)[0]
    ui_header = [html.unescape(h) for h in re.findall(r"<th(?: [^>]*)?>(.*?)</th>", tasks_table)]

    assert run_header == show_header == live_header == ui_header == list(COLUMNS)
    keys = [row[0] for row in run_rows]
    assert keys == [row[0] for row in show_rows] == [row[0] for row in live_rows]
    assert keys.index("inside") < keys.index("inside/halve")  # a subflow's row, then its tasks
    first = slice(0, 4)  # task, state, attempts, duration: what every source knows
    assert [row[first] for row in run_rows] == [row[first] for row in show_rows] == [row[first] for row in live_rows]
    by_key = {row[0]: row for row in run_rows}
    assert by_key["shaky"][1:3] == ["SUCCESS", "2"]
    assert "three is odd" in by_key["inside/halve"][5] and "three is odd" in {r[0]: r for r in show_rows}["inside/halve"][5]
    assert {r[0]: r for r in show_rows}["halve"][4] == "4 done/1 failed/0 skipped"
    ui_rows = re.findall(r"<tr>(.*?)</tr>", tasks_table, re.S)[1:]
    ui_cells = [[html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<details>.*?</details>", "", c, flags=re.S))).strip()  # a task's link: its text
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in ui_rows]
    assert [cells[:5] for cells in ui_cells] == [row[:5] for row in show_rows]
