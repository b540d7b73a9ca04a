"""``rayflow show`` against ``rayflow run``: the same durations, the same item counts, and a
bounded wait for a run that ended in its actor but is missing from this RAYFLOW_HOME's history.

The commands run as a user runs them (a subprocess joining the session's Ray with --address).
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import pathlib
import re
import subprocess
import time

import pytest
from cli_runner import run_cli

import rayflow as rf
from rayflow.cli.output import print_run

pytestmark = pytest.mark.usefixtures("ray_session")
REPO = pathlib.Path(__file__).resolve().parent.parent
THIS = "tests/test_cli_show.py"


def rayflow(home: pathlib.Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cli(*args, home=home, timeout=timeout, RAY_ADDRESS="")


def table(stdout: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The tab-separated task table of ``run``/``show`` output: header and rows by task key."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("task\t"))
    header = lines[start].split("\t")
    rows = {}
    for line in lines[start + 1 :]:
        if "\t" not in line:
            break
        cells = line.split("\t")
        rows[cells[0]] = dict(zip(header, cells))
    return header, rows


def _once(marker_dir: str, name: str) -> bool:
    """True the first time ``name`` is asked for in ``marker_dir`` (across processes)."""
    try:
        fd = os.open(os.path.join(marker_dir, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


# -- 1. a run that ended in its actor, missing from this history -------------


@rf.task
def quick(x: int) -> int:
    return x + 1


@rf.flow
def small(x: int = 1) -> int:
    return quick(x)


def test_show_of_a_finished_live_run_missing_from_the_history_ends(tmp_path, monkeypatch, ray_session):
    """Started with one RAYFLOW_HOME, shown with another: the actor has it, this history never will."""
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "writer"))
    run = small.with_options(run_id="show-missing-1").run(x=2)
    assert run.state.is_successful()
    elsewhere = tmp_path / "reader"
    # The table and the JSON, two shows at once (each joins the cluster: seconds).
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        shown = pool.submit(rayflow, elsewhere, "show", "show-missing-1", "--address", ray_session, timeout=60)
        shown_json = pool.submit(rayflow, elsewhere, "show", "show-missing-1", "--address", ray_session, "--json", timeout=60)
        try:
            out = shown.result()
        except subprocess.TimeoutExpired:
            pytest.fail("rayflow show did not end for a finished run missing from the history")
        took = time.monotonic() - started
        as_json = shown_json.result()
    assert out.returncode == 1, out.stderr
    assert "state: SUCCESS (live)" in out.stdout  # what is known: the actor's final status
    _, rows = table(out.stdout)
    assert rows["quick"]["state"] == "SUCCESS"
    assert re.fullmatch(r"\d+\.\d{3}s", rows["quick"]["duration"])
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]  # Ray may log too
    assert len(errors) == 1, out.stderr
    assert "missing from the run history" in errors[0]
    assert str(elsewhere / "history.db") in errors[0] and "SUCCESS" in errors[0]
    assert took < 45

    assert as_json.returncode == 1
    data = json.loads(as_json.stdout)
    assert data["live"] is True and data["state"] == "SUCCESS"
    assert data["in_history"] is False and data["history_db"] == str(elsewhere / "history.db")
    assert "missing from the run history" in as_json.stderr


@pytest.mark.timeout(60)
def test_show_waits_for_the_history_then_reports_it_missing(tmp_path, monkeypatch, capsys):
    """Unit level: a live status that says SUCCESS and a history that never has the run."""
    import rayflow.runtime
    from rayflow.cli import show_cmd

    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    monkeypatch.setattr(show_cmd, "HISTORY_GRACE", 0.3)
    from rayflow.engine.protocol import LiveStatus, LiveTask

    status = LiveStatus("r1", "f", "FAILED", {"t": LiveTask("FAILED", 1, 10.0, 10.25, "boom")}, {})
    calls = []
    monkeypatch.setattr(rayflow.runtime, "live_status", lambda run_id, address=None: calls.append(run_id) or status)
    import typer

    with pytest.raises(typer.Exit) as exit_info:
        show_cmd.show("r1", watch=False, as_json=False, interval=0.1, address=None)
    assert exit_info.value.exit_code == 1
    captured = capsys.readouterr()
    assert "t\tFAILED\t1\t0.250s" in captured.out and "state: FAILED (live)" in captured.out
    assert f"missing from the run history at {tmp_path / 'history.db'}" in captured.err
    assert 1 < len(calls) < 20  # it waited a little for the history, then stopped


# -- 2. durations: one meaning in run, show and the live view ---------------


@rf.task(num_cpus=1)
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@rf.task(retries=1, num_cpus=1)
def flaky(value: float, marker_dir: str) -> float:
    time.sleep(0.1)
    if _once(marker_dir, "flaky"):
        raise ValueError("first attempt fails")
    return value


@rf.task(chunk_size=4)
def double(x: int) -> int:
    time.sleep(0.01)
    return 2 * x


@rf.flow
def timed(marker_dir: str) -> list:
    first = slow(0.5)
    second = slow(0.3, wait_for=[first])
    return [second, flaky(second, marker_dir), double.map(range(12))]


def test_run_and_show_print_the_same_durations(tmp_path, ray_session):
    home = tmp_path / "home"
    markers = tmp_path / "markers"
    markers.mkdir()
    ran = rayflow(home, "run", f"{THIS}:timed", "-p", f"marker_dir={markers}", "--address", ray_session,
                  "--run-id", "durations-1")
    assert ran.returncode == 0, ran.stderr
    run_header, run_rows = table(ran.stdout)
    shown = rayflow(home, "show", "durations-1")
    assert shown.returncode == 0, shown.stderr
    show_header, show_rows = table(shown.stdout)
    assert "duration" in run_header and "duration" in show_header
    assert set(run_rows) == {"slow", "slow-2", "flaky", "double"}
    for key, row in run_rows.items():
        assert re.fullmatch(r"\d+\.\d{3}s", row["duration"]), row
        assert show_rows[key]["duration"] == row["duration"], key
    # the attempt's run time in the worker: the sleep (loose bounds: the machine may be busy)
    assert 0.5 <= float(run_rows["slow"]["duration"][:-1]) < 1.5
    assert 0.3 <= float(run_rows["slow-2"]["duration"][:-1]) < 1.3
    assert 0.1 <= float(run_rows["flaky"]["duration"][:-1]) < 1.0
    assert show_rows["flaky"]["attempts"] == "2" and run_rows["flaky"]["attempts"] == "2"

    data = json.loads(rayflow(home, "show", "durations-1", "--json").stdout)
    by_key = {row["task"]: row for row in data["task_rows"]}
    for key, row in run_rows.items():
        assert f"{by_key[key]['duration']:.3f}s" == row["duration"], key


def test_the_live_view_uses_the_same_duration(capsys):
    from rayflow.cli.history import print_live
    from rayflow.states import State, StateType

    state = State(type=StateType.SUCCESS, started_at=100.0, finished_at=100.4567)
    status = {
        "run_id": "r", "flow": "f", "state": "RUNNING", "maps": {},
        "tasks": {
            "done": {"state": "SUCCESS", "attempt": 1, "started_at": state.started_at,
                     "finished_at": state.finished_at, "message": ""},
            "busy": {"state": "RUNNING", "attempt": 1, "started_at": None, "finished_at": None, "message": ""},
        },
    }
    print_live(status, as_json=False)
    _, rows = table(capsys.readouterr().out)
    assert rows["done"]["duration"] == f"{state.duration:.3f}s" == "0.457s"
    assert rows["busy"]["duration"] == "-"
    print_live(status, as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert data["tasks"]["done"]["duration"] == pytest.approx(state.duration)


# -- 3. item counts: every item once, in its final state ---------------------


ITEMS = 200


def _always_fails(x: int) -> bool:
    return x % 25 == 0  # 8 items


def _fails_once(x: int) -> bool:
    return x % 10 == 3  # 20 items


def _retries_once(x: int) -> bool:
    return x % 40 == 11  # 5 items


def _skipped(x: int) -> bool:
    return x % 50 == 7  # 4 items


@rf.task(retries=1, chunk_size=16)
def shaky(x: int, marker_dir: str) -> int:
    if _skipped(x):
        raise rf.Skip("not this one")
    if _always_fails(x):
        raise ValueError(f"item {x} always fails")
    if _fails_once(x) and _once(marker_dir, f"fail-{x}"):
        raise ValueError(f"item {x} fails once")
    if _retries_once(x) and _once(marker_dir, f"retry-{x}"):
        raise rf.Retry("again")
    return x


@rf.flow
def retried(marker_dir: str, n: int = ITEMS) -> list:
    return shaky.map(range(n), marker_dir=rf.unmapped(marker_dir))


def test_show_counts_each_retried_item_once_in_its_final_state(tmp_path, monkeypatch):
    home = tmp_path / "home"
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("RAYFLOW_HOME", str(home))
    run = retried.run(marker_dir=str(markers))
    states = run.map_states("shaky")
    assert len(states) == ITEMS
    failed = sum(s.is_failed() for s in states)
    skipped = sum(s.is_skipped() for s in states)
    assert failed == 8 and skipped == 4
    assert sum(s.attempt == 2 for s in states) == 8 + 20 + 5  # the retried items, each once

    out = io.StringIO()
    print_run(run, stream=out)  # what `rayflow run` prints
    _, run_rows = table(out.getvalue())
    assert run_rows["shaky"]["error / note"].startswith(f"{ITEMS} items: {ITEMS - failed} ok, {failed} failed ({skipped} skipped)")

    shown = rayflow(home, "show", run.run_id)
    assert shown.returncode == 0, shown.stderr
    _, show_rows = table(shown.stdout)
    assert show_rows["shaky"]["items"] == f"{ITEMS} done/{failed} failed/{skipped} skipped"

    data = json.loads(rayflow(home, "show", run.run_id, "--json").stdout)
    (row,) = [r for r in data["task_rows"] if r["task"] == "shaky"]
    items = row["items"]
    assert (items["total"], items["done"], items["failed"], items["skipped"]) == (ITEMS, ITEMS, failed, skipped)
    assert items["ok"] == ITEMS - failed
    expected: dict[str, int] = {}
    for s in states:
        expected[s.type.value] = expected.get(s.type.value, 0) + 1
    assert items["states"] == expected
