"""Mapping behaviour only real Ray shows: pipelining, a killed worker, backpressure, shared payloads."""

from __future__ import annotations

import os
import pathlib
import signal
import threading
import time

import numpy as np
import pytest
import ray

import rayflow as rf
from rayflow.engine.orchestrator import Orchestrator
from rayflow.engine.plan import compile_plan
from rayflow.runtime.actor.executor import RayExecutor
from rayflow.states import StateType as T

pytestmark = pytest.mark.usefixtures("ray_session")


@rf.task(chunk_size=2)
def slow_stage(x: int) -> dict:
    start = time.time()
    time.sleep(0.05)
    return {"x": x, "start": start, "end": time.time()}


@rf.task
def next_stage(item: dict) -> dict:
    return {"x": item["x"], "start": time.time()}


def test_chained_maps_are_pipelined_chunk_by_chunk():
    """
    slow_stage.map (10 chunks of 2) --> next_stage.map
    Downstream chunk 0 starts when upstream chunk 0 is done, before upstream ends.
    """

    @rf.flow
    def pipeline():
        return next_stage.map(slow_stage.map(range(20)))

    run = pipeline.run()
    up, down = run.task_result("slow_stage"), run.result()
    assert [d["x"] for d in down] == list(range(20))
    first_down = min(d["start"] for d in down)
    last_up_start = max(u["start"] for u in up)
    assert first_down < last_up_start, "the downstream map waited for the whole upstream map"
    for u, d in zip(up, down):
        assert d["start"] >= u["end"]  # element-wise: item i after item i


def test_max_in_flight_bounds_concurrent_chunks():
    @rf.task(chunk_size=1, max_in_flight=1)
    def one_at_a_time(x: int) -> dict:
        start = time.time()
        time.sleep(0.05)
        return {"start": start, "end": time.time()}

    @rf.flow
    def serial():
        return one_at_a_time.map(range(6))

    spans = sorted((r["start"], r["end"]) for r in serial())
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


@rf.task(chunk_size=2)
def victim_item(x: int, root: str) -> int:
    calls = pathlib.Path(root) / f"{x}.calls"
    n = int(calls.read_text()) + 1 if calls.exists() else 1
    calls.write_text(str(n))
    if x == 5 and n == 1:
        (pathlib.Path(root) / "victim.pid").write_text(str(os.getpid()))
        time.sleep(60)
    return x


def test_worker_killed_mid_chunk_reruns_only_that_chunk(tmp_path):
    @rf.flow
    def fragile():
        return victim_item.map(range(8), rf.unmapped(str(tmp_path)))

    holder = {}
    thread = threading.Thread(target=lambda: holder.setdefault("run", fragile.run()))
    thread.start()
    pid_file = tmp_path / "victim.pid"
    deadline = time.time() + 60
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    thread.join(60)
    run = holder["run"]
    assert run.result() == list(range(8))
    assert all(s.type is T.SUCCESS for s in run.map_states("victim_item"))
    calls = {int(p.stem): int(p.read_text()) for p in tmp_path.glob("*.calls")}
    assert calls == {0: 1, 1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 1, 7: 1}  # only chunk [4, 6) ran again


def test_unmapped_argument_and_function_are_put_once_for_all_chunks(monkeypatch):
    big = np.zeros(1_000_000)

    @rf.task(chunk_size=1)
    def uses_big(x: int, table: np.ndarray) -> float:
        return float(table[x])

    @rf.flow
    def shared():
        return uses_big.map(range(12), rf.unmapped(big))

    plan = compile_plan(shared.graph, shared)
    puts = []
    real_put = ray.put

    def counting_put(value, *args, **kwargs):
        puts.append(type(value).__name__)
        return real_put(value, *args, **kwargs)

    monkeypatch.setattr(ray, "put", counting_put)
    executor = RayExecutor("put-once")
    summary = Orchestrator(plan, executor, "put-once").run()
    assert summary.task_states["uses_big"].type is T.MAPPED
    assert puts.count("bytes") == 1  # the payload (function + the 8 MB unmapped array), once
    assert len(plan.by_key["uses_big"].payload) > 8_000_000


@rf.task
def maybe(x: int) -> int:
    if x % 7 == 6:
        raise ValueError("sixes fail")
    return x * x


@pytest.mark.parametrize("chunk_size", [1, 3, 8, None])
def test_results_on_ray_do_not_depend_on_chunk_size(chunk_size):
    values = list(range(-20, 45))

    @rf.flow
    def law():
        squared = maybe.with_options(chunk_size=chunk_size).map(values)
        return [squared, total_of(squared)]

    run = law.run()
    assert run.task_result("maybe") == [None if v % 7 == 6 else v * v for v in values]
    assert run.task_result("total_of") == sum(v * v for v in values if v % 7 != 6)
    assert [s.is_failed() for s in run.map_states("maybe")] == [v % 7 == 6 for v in values]


@rf.task(trigger=rf.triggers.all_finished)
def total_of(xs: list) -> int:
    return sum(xs)


def test_per_item_timeout_stops_only_that_item():
    @rf.task(timeout=0.5, chunk_size=4)
    def sometimes_slow(x: int) -> int:
        if x == 2:
            time.sleep(30)
        return x

    @rf.flow
    def timed():
        return sometimes_slow.map(range(4))

    start = time.time()
    run = timed.run()
    assert time.time() - start < 20
    states = run.map_states("sometimes_slow")
    assert [s.type for s in states] == [T.SUCCESS, T.SUCCESS, T.TIMED_OUT, T.SUCCESS]
    assert "timed out after 0.5s" in states[2].message
    assert run.task_result("sometimes_slow") == [0, 1, None, 3]


@rf.task
def slow_first(x: int) -> int:
    if x == 0:
        time.sleep(0.3)  # alone longer than a first chunk's budget (maps.sizer.FIRST_BUDGET, 0.25 s)
    return 2 * x + 1


def test_a_first_chunk_stopped_at_its_budget_leaves_its_other_items_to_the_map():
    from rayflow.store import RunStore
    from rayflow.store.views import map_items

    n = 20_000  # a sized map of more than SMALL_MAP items: one budgeted chunk per CPU first

    @rf.flow
    def budgeted():
        return rf.reduce.sum(slow_first.map(range(n)))

    run = budgeted.run()
    assert run.result() == sum(2 * x + 1 for x in range(n))
    rows = sorted((c["start"], c["stop"], c["items"]) for c in RunStore().run(run.run_id)["chunks"] if c["task_key"] == "slow_first")
    assert rows[0] == (0, 1, 1)  # item 0 spent the budget of chunk [0, 10000): it stopped there
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:])) and rows[-1][1] == n
    assert all(stop - start == items for start, stop, items in rows)
    counts = map_items([c for c in RunStore().run(run.run_id)["chunks"] if c["task_key"] == "slow_first"])
    assert (counts["total"], counts["ok"]) == (n, n)
