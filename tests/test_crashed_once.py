"""CRASHED is written once, by whoever detects the death (a reader that finds the run's driver gone,
the server's reaper, the runner that sees its actor die), then read as recorded: runs() filters
and pages every state in SQL."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys

from rayflow.store import RunStore
from sql_trace import trace_statements


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def _record(store: RunStore, run_id: str, state: str, started: float, pid: int, flow: str = "f") -> None:
    graph = {"flow": flow, "nodes": [], "driver": {"host": socket.gethostname(), "pid": pid}}
    store.write(
        [(run_id, flow, "{}", state, None, started, None if state in ("RUNNING", "PENDING") else started + 1, None, "[]", 1)],
        [], [], [], [(run_id, json.dumps(graph))],
    )


def _stored(store: RunStore) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(store.path) as db:
        runs = dict(db.execute("SELECT run_id, state FROM runs"))
        attempts = dict(db.execute("SELECT run_id, state FROM run_attempts"))
    return {run_id: (state, attempts.get(run_id)) for run_id, state in runs.items()}


def test_a_reader_that_finds_the_driver_gone_writes_crashed_once_and_pages_it_in_sql(tmp_path):
    store = RunStore(tmp_path)
    dead, alive = _dead_pid(), os.getpid()
    for i in range(3):
        _record(store, f"gone{i}", "RUNNING", 100.0 + i, dead)
    _record(store, "live", "RUNNING", 200.0, alive)
    _record(store, "done", "SUCCESS", 50.0, dead)

    statements = trace_statements(store)
    page = store.runs(state="crashed", limit=2, offset=1)
    assert [r["run_id"] for r in page] == ["gone1", "gone0"]  # newest first, after the first
    reads = [s for s in statements if s.startswith("SELECT runs.*")]
    assert len(reads) == 1 and "LIMIT" in reads[0]  # the page is cut in SQL, not by reading every run
    stored = _stored(store)
    assert stored["gone0"] == stored["gone1"] == stored["gone2"] == ("CRASHED", "CRASHED")  # written, run and attempt
    assert stored["live"][0] == "RUNNING" and stored["done"][0] == "SUCCESS"
    assert "is gone" in store.run("gone0")["message"]

    statements.clear()
    assert [r["run_id"] for r in store.runs(state="RUNNING")] == ["live"]
    assert not [s for s in statements if s.startswith("UPDATE")]  # once: nothing left to write


def test_a_run_that_ended_meanwhile_keeps_its_end(tmp_path):
    store = RunStore(tmp_path)
    _record(store, "r", "SUCCESS", 1.0, _dead_pid())
    assert store.mark_crashed("r", "late") is False
    assert store.run("r")["state"] == "SUCCESS"


def test_the_servers_reaper_writes_crashed_for_a_run_whose_thread_ended_without_an_end(tmp_path):
    from test_schedules import T0, Clock, _server

    from rayflow.schedules import Interval

    clock = Clock(T0)
    server = _server(tmp_path, Interval(10), clock=clock)
    clock.now = T0 + 10
    server.tick()
    (_, _, handle), = server.launcher.launched
    store = RunStore(tmp_path)
    _record(store, handle.run_id, "RUNNING", T0, os.getpid())  # its driver (this process) lives on
    handle.finished = "ERROR (RuntimeError: the run thread died)"
    server.reap()
    run = store.run(handle.run_id)
    assert run["state"] == "CRASHED" and "RuntimeError: the run thread died" in run["message"]
