"""``log_prints=True``: every line a map item prints is stored under that item's map index.

Chunks of a map run at once (threads of one process with the in-process runner, Ray workers
with Ray), and inside a chunk items run at once too (``concurrency=`` threads, an async task's
event loop).  Every item prints many lines, some in two pieces with a pause between them, and
one item fails its first attempt and prints everything again: each stored line must name, in
its map index, the item whose text it is, exactly once per attempt.  A task without
``log_prints`` printing meanwhile is never captured.  On both runners, from one run each
(module-scoped); then ``rayflow logs RUN --task MAP --item N`` and the item's page show
exactly that item's lines.
"""

from __future__ import annotations

import contextvars

import asyncio
import collections
import pathlib
import re
import threading
import time

import pytest
from starlette.testclient import TestClient

import rayflow as rf
from cli_runner import run_cli_in_process
from rayflow.store import RunStore
from rayflow.ui import create_app

ITEMS = 24
LINES = 12
RETRIED = 13  # fails its first attempt, after printing everything
PIECES = "item {x} begins, then", " ends"  # one line printed in two pieces, a pause between them


def _fail_once(x: int, marks: str) -> None:
    mark = pathlib.Path(marks) / f"{x}"
    if x == RETRIED and not mark.exists():
        mark.touch()
        raise ValueError(f"first try of {x}")


@rf.task(chunk_size=8, retries=1, retry_delay=0.0, log_prints=True)
def chatty(x: int, marks: str) -> int:
    for k in range(LINES):
        print(f"item {x} line {k}")
        time.sleep(0.0005)
    print(PIECES[0].format(x=x), end="")
    time.sleep(0.002)
    print(PIECES[1])
    rf.get_run_logger().info(f"item {x} logged")
    _fail_once(x, marks)
    return x


@rf.task(chunk_size=8, concurrency=4, retries=1, retry_delay=0.0, log_prints=True)
def threaded(x: int, marks: str) -> int:
    return chatty.fn(x, marks)


@rf.task(chunk_size=8, concurrency=8, retries=1, retry_delay=0.0, log_prints=True)
async def waiting(x: int, marks: str) -> int:
    for k in range(LINES):
        print(f"item {x} line {k}")
        await asyncio.sleep(0.0005)
    print(PIECES[0].format(x=x), end="")
    await asyncio.sleep(0.002)  # the other items of the loop print meanwhile
    print(PIECES[1])
    await asyncio.to_thread(print, f"item {x} from asyncio.to_thread")
    rf.get_run_logger().info(f"item {x} logged")
    _fail_once(x, marks)
    return x


@rf.task(chunk_size=8, log_prints=True)
def starts_a_thread(x: int) -> int:
    thread = threading.Thread(target=print, args=(f"item {x} from its own thread",))
    thread.start()
    thread.join()
    print(f"item {x} line 0")
    return x


@rf.task(chunk_size=8)
def quiet(x: int) -> int:
    for k in range(LINES):
        print(f"not captured {x} {k}")
        time.sleep(0.0005)
    return x


@rf.flow
def printing(marks: str):
    return {
        "chatty": chatty.map(range(ITEMS), rf.unmapped(marks)),
        "threaded": threaded.map(range(ITEMS), rf.unmapped(f"{marks}/threaded")),
        "waiting": waiting.map(range(ITEMS), rf.unmapped(f"{marks}/waiting")),
        "starts_a_thread": starts_a_thread.map(range(ITEMS)),
        "quiet": quiet.map(range(ITEMS)),
    }


def expected_lines(x: int, *, to_thread: bool = False) -> list[str]:
    lines = [f"item {x} line {k}" for k in range(LINES)] + [PIECES[0].format(x=x) + PIECES[1]]
    lines += [f"item {x} from asyncio.to_thread"] if to_thread else []
    lines += [f"item {x} logged"]
    return sorted(lines * (2 if x == RETRIED else 1))  # the retried item printed everything twice


@pytest.fixture(scope="module", params=["local", "ray"])
def printed(request, tmp_path_factory):
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    home = tmp_path_factory.mktemp(f"prints-{request.param}")
    marks = tmp_path_factory.mktemp("marks")
    for sub in ("threaded", "waiting"):
        (marks / sub).mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(home))
        run = printing.with_options(runner=request.param).run(marks=str(marks))
    assert run.state.is_successful(), run.state
    records = RunStore(home).logs(run.run_id)
    return {"runner": request.param, "home": home, "run": run, "records": records}


def _said(records: list[dict], task: str) -> dict[int | None, list[str]]:
    """The INFO lines of ``task``'s records, by the map index they were stored with."""
    by_index: dict[int | None, list[str]] = collections.defaultdict(list)
    for r in records:
        if r["task_key"] == task and r["level"] == "INFO":
            by_index[r["map_index"]].append(r["message"])
    return {index: sorted(lines) for index, lines in by_index.items()}


@pytest.mark.parametrize("task", ["chatty", "threaded", "waiting"])
def test_every_printed_line_is_stored_under_the_map_index_of_the_item_that_printed_it(printed, task):
    said = _said(printed["records"], task)
    wrong = [(index, line) for index, lines in said.items() for line in lines if not line.startswith(f"item {index} ")]
    assert not wrong, f"{len(wrong)} lines under another item's index, e.g. {wrong[:5]}"
    assert set(said) == set(range(ITEMS))
    for x in range(ITEMS):
        assert said[x] == expected_lines(x, to_thread=task == "waiting"), x


def test_a_thread_an_item_starts_prints_under_that_item_or_is_not_captured(printed):
    """A thread a task starts has no capture of its own: its lines are the item's where the
    task's chunk is the only one capturing prints in the process (each Ray worker's case), and
    otherwise go to the process's stdout (never under another item)."""
    said = _said(printed["records"], "starts_a_thread")
    for index, lines in said.items():
        assert all(line.startswith(f"item {index} ") for line in lines), (index, lines)
        assert f"item {index} line 0" in lines
    if printed["runner"] == "ray":  # one chunk at a time per worker process
        assert all(f"item {x} from its own thread" in said[x] for x in range(ITEMS))


def test_a_task_without_log_prints_is_never_captured(printed):
    assert not [r for r in printed["records"] if "not captured" in r["message"]]
    assert not [r for r in printed["records"] if r["task_key"] == "quiet"]


def test_logs_of_an_item_and_its_page_show_exactly_its_printed_lines(printed):
    home, run = printed["home"], printed["run"]
    for x in (0, 7, RETRIED, ITEMS - 1):
        out = run_cli_in_process("logs", run.run_id, "--task", "chatty", "--item", str(x), home=home)
        assert out.returncode == 0, out.stderr
        shown = sorted(re.findall(r" INFO    chatty\[(\d+)\]: (.*)", out.stdout))
        assert shown == sorted((str(x), line) for line in expected_lines(x)), x
    client = TestClient(create_app(home), base_url="http://127.0.0.1:4200")
    page = client.get(f"/runs/{run.run_id}/maps/chatty/items/{RETRIED}")
    assert page.status_code == 200
    logs = page.text.split('id="logs">', 1)[1].split("</pre>", 1)[0]
    lines = re.findall(r"item (\d+) (?:line \d+|begins, then ends|logged)", logs)
    assert lines and set(lines) == {str(RETRIED)} and len(lines) == len(expected_lines(RETRIED))


def test_stdout_is_put_back_whatever_order_overlapping_works_end_in(monkeypatch):
    """Before: each work redirected sys.stdout and put back what it had found, so two works
    ending in the order they started left the first one's capture as the process's stdout."""
    import io

    mine = io.StringIO()
    monkeypatch.setattr("sys.stdout", mine)
    contextvars.copy_context().run(_overlap, mine)  # out of order in one thread: its context stays the test's
    assert mine.getvalue() == "after both\nafter both\n"


def _overlap(mine) -> None:
    from rayflow.engine.worker.logs import capture

    for first_ends_first in (True, False):
        a = capture("r", "a", None, None, True)
        b = capture("r", "b", None, None, True)
        a_logs, b_logs = a.__enter__(), b.__enter__()
        (a if first_ends_first else b).__exit__(None, None, None)
        (b if first_ends_first else a).__exit__(None, None, None)
        import sys

        assert sys.stdout is mine
        print("after both")
        assert not a_logs.records and not b_logs.records


def test_a_line_is_recorded_whole_when_its_newline_comes_and_flushes_do_not_cut_it(capsys):
    from rayflow.engine.worker.logs import capture

    with capture("r", "t", None, 10, True, size=3) as logs:
        logs.item[0] = 1
        print("one", end="", flush=True)
        print(" piece", "and", "more", flush=True)
        logs.item[0] = 2
        print("left unfinished", end="")
    assert [(r[4], r[2]) for r in logs.records] == [(11, "one piece and more"), (12, "left unfinished")]
    assert capsys.readouterr().out == ""


def test_threads_of_a_work_and_threads_of_no_work(capsys):
    """A thread alive before the work started is not the work's; one it starts is, under the
    item its loop runs, and under no item once the loop ran past the chunk's last."""
    from rayflow.engine.worker.logs import capture

    def printed_by_a_thread(text: str) -> None:
        thread = threading.Thread(target=print, args=(text,))
        thread.start()
        thread.join()

    ready, go, done = threading.Event(), threading.Event(), threading.Event()

    def before() -> None:
        ready.set()
        go.wait(10)
        print("from an older thread")
        done.set()

    older = threading.Thread(target=before)
    older.start()
    ready.wait(10)
    with capture("r", "t", None, 16, True, size=8) as logs:
        logs.item[0] = 5
        printed_by_a_thread("from its thread")
        go.set()
        done.wait(10)
        logs.item[0] = 8  # past the last item
        printed_by_a_thread("after the loop")
    older.join()
    assert [(r[4], r[2]) for r in logs.records] == [(21, "from its thread"), (None, "after the loop")]
    assert capsys.readouterr().out == "from an older thread\n"


def test_without_a_stdout_other_code_prints_nothing_and_a_work_still_captures(monkeypatch):
    """A process may have no stdout (``sys.stdout is None``: print() prints nothing)."""
    import sys

    from rayflow.engine.worker.logs import capture

    monkeypatch.setattr("sys.stdout", None)
    other = threading.Thread(target=lambda: (time.sleep(0.2), print("into nothing", flush=True)))
    other.start()
    with capture("r", "t", None, None, True) as logs:
        print("captured")
        other.join()
    assert [r[2] for r in logs.records] == ["captured"] and sys.stdout is None
