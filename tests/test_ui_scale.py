"""The history's schema at scale: a fresh file gets every table and index of ``SCHEMA``; a file
an older rayflow wrote (schema 6, before the UI's tables and indexes) gets them all when opened,
keeps its runs and records real runs after it; a file at this version that lacks an index added
since (SCHEMA grew without a version raise) gets it too; and the dashboard's aggregates read along
indexes (EXPLAIN QUERY PLAN: no ``SCAN runs``) on the upgraded file.  benchmarks/ui_bench.py times
the pages at 10^5 runs."""

from __future__ import annotations

import sqlite3
import time

import pytest
from sql_trace import trace_statements
from starlette.testclient import TestClient

import rayflow as rf
from rayflow.store import RunStore, aggregates
from rayflow.store.schema import SCHEMA_NAMES, SCHEMA_VERSION, missing
from rayflow.ui import create_app

BASE = "http://127.0.0.1:4200"

# The SCHEMA of rayflow at schema version 6 (git show 11cc2be^:rayflow/store/schema.py), as such a file holds it.
SCHEMA_6 = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, flow TEXT NOT NULL, params TEXT NOT NULL, state TEXT NOT NULL,
    message TEXT, started_at REAL, finished_at REAL, trace_id TEXT, tasks TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS run_attempts (
    run_id TEXT NOT NULL, attempt INTEGER NOT NULL, state TEXT NOT NULL, message TEXT,
    started_at REAL, finished_at REAL, trace_id TEXT, PRIMARY KEY (run_id, attempt)
);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs(started_at);
CREATE INDEX IF NOT EXISTS runs_unfinished ON runs(state) WHERE state IN ('PENDING', 'RUNNING');
CREATE TABLE IF NOT EXISTS transitions (
    run_id TEXT NOT NULL, task_key TEXT NOT NULL, seq INTEGER NOT NULL, state TEXT NOT NULL,
    attempt INTEGER, message TEXT, error_type TEXT, traceback TEXT, at REAL, started_at REAL, finished_at REAL,
    run_attempt INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS transitions_by_run ON transitions(run_id, task_key, seq);
CREATE TABLE IF NOT EXISTS chunks (
    run_id TEXT NOT NULL, task_key TEXT NOT NULL, start INTEGER, stop INTEGER, items INTEGER,
    counts TEXT, started_at REAL, finished_at REAL, error TEXT, run_attempt INTEGER NOT NULL DEFAULT 1,
    retried INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS chunks_by_run ON chunks(run_id, task_key);
CREATE TABLE IF NOT EXISTS items (
    run_id TEXT NOT NULL, run_attempt INTEGER NOT NULL, task_key TEXT NOT NULL, item INTEGER NOT NULL,
    state TEXT NOT NULL, attempts INTEGER, error_type TEXT, message TEXT, traceback TEXT,
    PRIMARY KEY (run_id, run_attempt, task_key, item)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (
    run_id TEXT NOT NULL, at REAL, level TEXT, message TEXT, task_key TEXT, map_index INTEGER,
    trace_id TEXT, span_id TEXT, run_attempt INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS logs_by_run ON logs(run_id, task_key);
CREATE TABLE IF NOT EXISTS graphs (run_id TEXT PRIMARY KEY, graph TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS schedules (
    schedule_id TEXT PRIMARY KEY, flow TEXT NOT NULL, target TEXT, spec TEXT NOT NULL,
    evaluated_until REAL, next_fire REAL, updated_at REAL
);
CREATE TABLE IF NOT EXISTS scheduled_runs (
    schedule_id TEXT NOT NULL, scheduled_for REAL NOT NULL, run_id TEXT, outcome TEXT NOT NULL, at REAL,
    server TEXT, PRIMARY KEY (schedule_id, scheduled_for)
);
CREATE INDEX IF NOT EXISTS scheduled_runs_by_run ON scheduled_runs(run_id);
CREATE INDEX IF NOT EXISTS scheduled_runs_held ON scheduled_runs(schedule_id)
    WHERE outcome IN ('claimed', 'starting', 'queued', 'waiting (max_concurrent)');
CREATE TABLE IF NOT EXISTS servers (
    server_id TEXT PRIMARY KEY, host TEXT, pid INTEGER, started_at REAL, heartbeat_at REAL, stopped_at REAL,
    schedules TEXT
);
CREATE TABLE IF NOT EXISTS pending_applied (name TEXT PRIMARY KEY, at REAL);
CREATE TABLE IF NOT EXISTS limits (name TEXT PRIMARY KEY, slots INTEGER NOT NULL, per_second REAL, updated_at REAL);
"""


@rf.task
def double(x: int) -> int:
    return 2 * x


@rf.flow(name="after_upgrade", runner="local", progress=False)
def after_upgrade(n: int = 3) -> int:
    return double(n)


def _names(path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}


def _plans(path) -> dict[str, str]:
    """The query plans of the dashboard's and a flow page's aggregates."""
    now = time.time()
    queries = {
        "states": (aggregates.STATES_SQL, []),
        "bars": ("SELECT COUNT(*) FROM runs WHERE state = ? AND started_at >= ? AND started_at < ?", ["FAILED", now - 3600, now]),
        "failing": (f"SELECT flow, state, COUNT(*) FROM runs WHERE started_at >= ? AND state IN {aggregates._FAILING_SQL} "
                    "GROUP BY +flow, +state", [now - 86400]),
        "flow window": ("SELECT state, started_at, finished_at FROM runs WHERE flow = ? AND started_at >= ?", ["f", now]),
        "flow last runs": ("SELECT run_id, state, started_at FROM runs WHERE flow = ? ORDER BY started_at DESC LIMIT 30", ["f"]),
    }
    with sqlite3.connect(path) as db:
        return {k: " | ".join(str(r[-1]) for r in db.execute("EXPLAIN QUERY PLAN " + q, a)) for k, (q, a) in queries.items()}


def test_a_fresh_history_has_every_table_and_index(tmp_path):
    store = RunStore(tmp_path)
    assert {"runs_by_state", "runs_by_flow", "items_by_error", "logs_in_order", "artifacts_latest"} <= SCHEMA_NAMES
    assert SCHEMA_NAMES <= _names(store.path)
    with sqlite3.connect(store.path) as db:
        assert missing(db) == set()
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory):
    """A schema-6 file with a run in it, opened by this rayflow, then a real run recorded in it."""
    home = tmp_path_factory.mktemp("schema6-home")
    with sqlite3.connect(home / "history.db") as db:
        db.executescript(SCHEMA_6)
        now = time.time()
        db.execute("INSERT INTO runs VALUES ('old-run', 'before', '{}', 'FAILED', 'it failed', ?, ?, NULL, '[\"a\"]', 1)", [now - 60, now - 50])
        db.execute("INSERT INTO run_attempts VALUES ('old-run', 1, 'FAILED', 'it failed', ?, ?, NULL)", [now - 60, now - 50])
        db.execute("INSERT INTO transitions VALUES ('old-run', 'a', 1, 'FAILED', 1, 'boom', 'builtins.ValueError', 'Traceback', ?, ?, ?, 1)",
                   [now - 50, now - 60, now - 50])
        db.execute("PRAGMA user_version = 6")
    before = _names(home / "history.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(home))
        run = after_upgrade.run()
    return {"home": home, "before": before, "run": run, "client": TestClient(create_app(home), base_url=BASE)}


def test_a_schema_6_history_gains_every_table_and_index_and_keeps_its_runs(upgraded):
    path = upgraded["home"] / "history.db"
    assert "artifacts" not in upgraded["before"] and "runs_by_state" not in upgraded["before"]  # it was an old file
    assert SCHEMA_NAMES <= _names(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert {r[0]: r[1] for r in db.execute("SELECT run_id, state FROM runs")} == {
            "old-run": "FAILED", upgraded["run"].run_id: "SUCCESS"}
    for name, plan in _plans(path).items():
        assert "SCAN runs" not in plan and ("USING INDEX" in plan or "COVERING INDEX" in plan), (name, plan)


def test_the_pages_read_an_upgraded_history(upgraded):
    client, new = upgraded["client"], upgraded["run"].run_id
    for url in ("/", "/runs", "/flows", "/flows/before", "/flows/after_upgrade", "/runs/old-run", f"/runs/{new}",
                "/artifacts", "/api/artifacts", f"/runs/{new}/artifacts"):
        page = client.get(url)
        assert page.status_code == 200, (url, page.status_code, page.text[:300])
    flows = client.get("/flows").text
    assert "/flows/before" in flows and "/flows/after_upgrade" in flows and "/runs/old-run" in flows


def test_a_file_at_this_version_missing_a_later_index_gets_it(tmp_path):
    store = RunStore(tmp_path)
    with sqlite3.connect(store.path) as db:  # as a file made before these were added to SCHEMA at this version
        for name in ("runs_by_state", "runs_by_flow", "logs_in_order"):
            db.execute(f"DROP INDEX {name}")
        db.execute("DROP TABLE artifacts")
        assert missing(db) >= {"runs_by_state", "runs_by_flow", "logs_in_order", "artifacts", "artifacts_latest"}
    RunStore(tmp_path)
    with sqlite3.connect(store.path) as db:
        assert missing(db) == set()
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_the_flows_page_and_far_pages_of_runs_over_a_thousand_runs(tmp_path, monkeypatch):
    """/flows reads each flow's last runs along runs_by_flow, not the latest runs of all (it read
    the latest 1000 once: a flow that ran before them was missing); a far page of the runs list
    finds its rows in an index alone, then reads those rows."""
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    quiet = after_upgrade.run()
    store = RunStore(tmp_path)
    with sqlite3.connect(store.path) as db:  # the real run's rows, as its recorder wrote them
        run = db.execute("SELECT * FROM runs WHERE run_id = ?", [quiet.run_id]).fetchone()
        transitions = db.execute("SELECT * FROM transitions WHERE run_id = ?", [quiet.run_id]).fetchall()
    later = [(f"busy-{i:04d}", "busy", *run[2:5], run[5] + 1 + i, run[6] + 1 + i, *run[7:]) for i in range(1001)]
    store.write(later, [(r, *t[1:]) for r, *_ in later for t in transitions], [])
    page = TestClient(create_app(tmp_path), base_url=BASE).get("/flows")
    assert page.status_code == 200
    assert f"/runs/{quiet.run_id}" in page.text and "/flows/after_upgrade" in page.text
    assert "/runs/busy-1000" in page.text and "/runs/busy-0000" not in page.text  # the busy flow's last 30 only
    reader = RunStore(tmp_path)
    statements = trace_statements(reader)
    for flow, index in ((None, "runs_by_start"), ("busy", "runs_by_flow")):
        statements.clear()
        found = [r["run_id"] for r in reader.runs(flow=flow, limit=51, offset=900)]
        assert found == [f"busy-{i:04d}" for i in range(100, 49, -1)]  # newest first: 1000 .. 0, the real run last
        (select,) = [q for q in statements if "LIMIT" in q]
        with sqlite3.connect(reader.path) as db:
            plan = " | ".join(str(r[-1]) for r in db.execute("EXPLAIN QUERY PLAN " + select))
        assert f"COVERING INDEX {index}" in plan and "SEARCH runs USING INTEGER PRIMARY KEY" in plan, plan
    with TestClient(create_app(tmp_path), base_url=BASE) as client:
        far = client.get("/runs?page=20")  # 50 a page: the 951st to 1000th newest, busy-0050 .. busy-0001
        assert far.status_code == 200
        assert "/runs/busy-0050" in far.text and "/runs/busy-0001" in far.text and "/runs/busy-0051" not in far.text
