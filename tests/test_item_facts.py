"""Map item facts: the engine records, as the run goes, per chunk work the items it made final by
state and per item that did not succeed (or was run again) one row; the history's readers read
those rows, never a replay of the map's retries, losses and splits."""

from __future__ import annotations

import pathlib
import re
import sqlite3

import pytest

import rayflow as rf
from rayflow.engine import columns as C
from rayflow.engine.maps.feeds import WholeFeed
from rayflow.engine.maps.run import MapRun
from rayflow.engine.protocol import ChunkSummary
from rayflow.store import RunStore
from rayflow.store.schema import SCHEMA_VERSION
from rayflow.store.views import map_items, run_record
from sql_trace import trace_statements


def _flaky(marks: str):
    @rf.task(retries=1, retry_delay=0.0)
    def flaky(x: int) -> int:
        if x % 10 == 3:  # fails on its first attempt only
            mark = pathlib.Path(marks) / str(x)
            if not mark.exists():
                mark.touch()
                raise ValueError(f"first try of {x}")
        if x == 17:
            raise KeyError("never")  # both attempts
        if x == 5:
            raise rf.Skip("five is skipped")
        return x

    return flaky


def test_a_retried_item_and_a_failed_one_have_their_rows_with_state_and_attempts(runner, tmp_path):
    flaky = _flaky(str(tmp_path))

    @rf.flow
    def items():
        return flaky.with_options(chunk_size=8).map(range(24))

    run = items.with_options(runner=runner).run()
    store = RunStore()
    rows = {r["item"]: r for r in store.items(run.run_id, "flaky")}
    assert {i: (r["state"], r["attempts"]) for i, r in rows.items()} == {
        3: ("SUCCESS", 2), 13: ("SUCCESS", 2), 23: ("SUCCESS", 2),  # retried, then fine
        5: ("SKIPPED", 1),
        17: ("FAILED", 2),  # its one retry spent
    }
    assert rows[17]["error_type"].endswith("KeyError") and "never" in rows[17]["message"]
    assert "raise KeyError" in rows[17]["traceback"]
    assert rows[3]["error_type"] is None  # its last attempt succeeded
    assert (rows[5]["error_type"], rows[5]["message"]) == (None, "Skip signal: five is skipped")  # why, not an error
    assert [r["item"] for r in store.items(run.run_id, "flaky", state="failed")] == [17]
    assert [r["item"] for r in store.items(run.run_id, "flaky", after=5, limit=2)] == [13, 17]
    shown = run_record(store.run(run.run_id))  # what show --json and /api/runs/{id} give
    assert [(r["task_key"], r["item"], r["state"]) for r in shown["failed_items"]] == [("flaky", 17, "FAILED")]

    chunks = [c for c in store.run(run.run_id)["chunks"] if c["task_key"] == "flaky"]
    assert sum(c["retried"] for c in chunks) == 4  # 3, 13, 23 and 17 ran twice
    counts = map_items(chunks)
    assert (counts["total"], counts["ok"], counts["failed"], counts["skipped"]) == (24, 23, 1, 1)
    assert counts["states"] == {"FAILED": 1, "SKIPPED": 1, "SUCCESS": 22}


@rf.task(chunk_size=4, min_success_ratio=0.5)
def source(x: int) -> int:
    if x == 2:
        raise ValueError("two")
    if x == 5:
        raise rf.Skip("five is not wanted")
    return x


@rf.task(chunk_size=4, min_success_ratio=0.5)
def follows(x: int) -> int:
    return x


@rf.task(chunk_size=4, min_success_ratio=0.5, skip_on_upstream_skip=False)
def runs_anyway(x) -> str:
    return repr(x)


@rf.flow
def gated():
    """source.map(range(8)) -> follows.map -> follows.map (as "again"); runs_anyway.map(source)"""
    first = source.map(range(8))
    return [follows.map(follows.map(first)), runs_anyway.map(first)]


def test_a_skipped_or_gated_items_row_says_why(runner):
    """An item skipped, or gated by its upstream item, records the reason in its row's message:
    rf.Skip's message, or which upstream item failed or was skipped (its map and index)."""
    from starlette.testclient import TestClient

    from cli_runner import run_cli_in_process
    from rayflow.ui import create_app

    run = gated.with_options(runner=runner).run()
    store = RunStore()
    keys = store.run(run.run_id)["tasks"]
    rows = {(key, r["item"]): (r["state"], r["error_type"], r["message"]) for key in keys for r in store.items(run.run_id, key)}
    inner, outer = sorted((key for key in keys if key.startswith("follows")), key=lambda k: (len(k), k))
    assert rows == {
        ("source", 2): ("FAILED", "builtins.ValueError", "two"),
        ("source", 5): ("SKIPPED", None, "Skip signal: five is not wanted"),
        (inner, 2): ("TRIGGER_FAILED", "rayflow.TriggerFailed", "upstream item source[2] ended FAILED"),
        (inner, 5): ("SKIPPED", None, "upstream item source[5] was skipped"),
        (outer, 2): ("TRIGGER_FAILED", "rayflow.TriggerFailed", f"upstream item {inner}[2] ended TRIGGER_FAILED"),
        (outer, 5): ("SKIPPED", None, f"upstream item {inner}[5] was skipped"),
        ("runs_anyway", 2): ("TRIGGER_FAILED", "rayflow.TriggerFailed", "upstream item source[2] ended FAILED"),
    }
    done = run_cli_in_process("show", run.run_id, "--items", inner, home=RunStore().path.parent)
    assert done.returncode == 0, done.stderr
    assert "5\tSKIPPED\t1\tupstream item source[5] was skipped" in done.stdout, done.stdout
    page = TestClient(create_app(RunStore().path.parent), base_url="http://127.0.0.1:4200").get(f"/runs/{run.run_id}")
    assert page.status_code == 200 and "upstream item source[2] ended FAILED" in page.text


def _summary(chunk, size, counts, failed=(), indices=None, items=()):
    return ChunkSummary(
        work_id=0, map_key="m", chunk=chunk, size=size, started_at=0.0, finished_at=0.001,
        counts=dict(counts), failed=list(failed), indices=indices, items=list(items),
    )


def test_a_split_chunk_and_a_lost_item_are_facts_of_the_works_that_decided_them():
    """Chunk [0, 4) dies with its worker: split in halves; item 3 alone kills its worker until its
    system retries are spent.  The works' facts sum to the map's counts, and name item 3, FAILED."""
    from rayflow.core.options import TaskOptions

    run = MapRun("m", TaskOptions(chunk_size=4, system_retries=0), [WholeFeed("x", "column", None, 8)],
                 max_in_flight=8, cpus=1, clock=lambda: 0.0)
    (first, _), _ = run.next_jobs(0.0)
    facts = [run.on_summary(_summary(1, 4, {C.SUCCESS: 4}), "h1", 0.0)]
    assert run.on_lost(first) == "split"
    low, high = (job for job, _ in run.next_jobs(0.0))
    facts.append(run.on_summary(_summary(low.chunk, 2, {C.SUCCESS: 2}), "hl", 0.0))
    assert run.on_lost(high) == "split"
    two, three = (job for job, _ in run.next_jobs(0.0))
    facts.append(run.on_summary(_summary(two.chunk, 1, {C.SUCCESS: 1}), "h2", 0.0))
    assert run.on_lost(three) == "fail"
    run.release(three)
    facts.append(run.settle_lost(three, "lost", "WorkerCrashedError: died", "WorkerCrashedError"))
    assert run.done
    assert facts[-1].items == ((3, "FAILED", 1, "WorkerCrashedError", "WorkerCrashedError: died", None),)
    total: dict[str, int] = {}
    for f in facts:
        for state, n in f.counts.items():
            total[state] = total.get(state, 0) + n
    assert total == {"SUCCESS": 7, "FAILED": 1} == {t.value: n for t, n in run.counts().items()}


def test_an_items_page_is_one_indexed_query_in_a_million_item_map(tmp_path):
    """10^6 items in 1000 chunks, 10^4 of them failed: a page of items is one query that searches
    the items table's key (no scan, no replay), and reading the run reads one page of them."""
    store = RunStore(tmp_path)
    run_id = "big"
    store.write(
        [(run_id, "f", "{}", "MAPPED", None, 0.0, 1.0, None, '["m"]', 1)], [],
        [(run_id, "m", k * 1000, (k + 1) * 1000, 1000, '{"SUCCESS": 990, "FAILED": 10}', 0.0, 1.0, None, 1, 0)
         for k in range(1000)],
        items=[(run_id, 1, "m", k * 100, "FAILED", 1, "ValueError", f"bad {k}", "tb") for k in range(10_000)],
    )
    statements = trace_statements(store)
    page = store.items(run_id, "m", state="FAILED", after=500_000, limit=50)
    assert [r["item"] for r in page] == list(range(500_100, 505_100, 100))
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1
    statements.clear()
    run = store.run(run_id)
    counts = map_items(run["chunks"])
    assert (counts["total"], counts["failed"]) == (10**6, 10_000)
    (first,) = [s for s in statements if re.search(r"\bFROM items\b", s)]  # the run's first failed items only
    assert "LIMIT" in first and len(run["failed_items"]) == 100

    with sqlite3.connect(store.path) as db:
        for state in ("FAILED", None):
            query = "SELECT * FROM items WHERE run_id = ? AND run_attempt = ? AND task_key = ?" + (
                " AND state = ?" if state else "") + " AND item > ? ORDER BY item LIMIT 50"
            args = [run_id, 1, "m", *([state] if state else []), 0]
            plan = " ".join(str(r[-1]) for r in db.execute("EXPLAIN QUERY PLAN " + query, args))
            assert "SEARCH items USING PRIMARY KEY (run_id=? AND run_attempt=? AND task_key=? AND item>?)" in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # read in index order: no sort of the matches


def test_an_older_history_gains_the_item_tables_and_keeps_its_rows(tmp_path):
    path = tmp_path / "history.db"
    with sqlite3.connect(path) as db:  # a chunks table as schema 5 had it
        db.execute(
            "CREATE TABLE chunks (run_id TEXT NOT NULL, task_key TEXT NOT NULL, start INTEGER, stop INTEGER, items INTEGER, "
            "counts TEXT, started_at REAL, finished_at REAL, error TEXT, run_attempt INTEGER NOT NULL DEFAULT 1)"
        )
        db.execute("INSERT INTO chunks VALUES ('old', 'm', 0, 4, 4, '{\"SUCCESS\": 4}', 0, 1, NULL, 1)")
        db.execute("PRAGMA user_version = 5")
    store = RunStore(tmp_path)
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT start, stop, retried FROM chunks").fetchall() == [(0, 4, 0)]
        assert db.execute("SELECT count(*) FROM items").fetchone() == (0,)
    assert store.items("old", "m") == []


def test_a_page_of_items_refuses_a_negative_limit(tmp_path):
    with pytest.raises(ValueError, match="limit must be 0 or more"):
        RunStore(tmp_path).items("r", "m", limit=-1)
