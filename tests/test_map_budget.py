"""A sized map's first chunks under a time budget (``ChunkJob.budget``, maps.sizer): one chunk per
CPU, each stopping once its budget is spent with its first items done; the map cuts the rest by
the time per item they measured.  The coordinator's rules in process (the harness of
test_map_coordinator, a fake clock); the worker's side through its own entry point."""

from __future__ import annotations

import dataclasses
import pathlib

import rayflow as rf
from rayflow.engine import columns as C
from rayflow.engine.driver.local_executor import LocalBox
from rayflow.engine.maps import run as R
from rayflow.engine.maps import sizer
from rayflow.engine.protocol import BUDGET_PROBE
from rayflow.engine.worker.execute import execute
from rayflow.states import StateType as T
from rayflow.store import RunStore

from test_map_coordinator import Harness, double

N = 20_000  # more than SMALL_MAP: a map that was measured first from 64-item chunks


@rf.task(retries=1, retry_delay=5.0)
def fails_some(x: int) -> int:
    if x in (5, 1500):
        raise ValueError(f"bad {x}")
    return 2 * x


def _stop_now(h: Harness, done_in: float = 0.001) -> None:
    """Run the first pending work with its budget spent at once (as if its first item took longer)."""
    spec, work, handles = h.pending.pop(0)
    work = dataclasses.replace(work, job=dataclasses.replace(work.job, budget=1e-9))
    value, report = execute(spec.payload, work, *[x.value for x in handles])
    report.started_at, report.finished_at = 0.0, done_in * report.size
    h.take(h.coord.finish_work(work, report, LocalBox(value), None))


def _ranges(h: Harness, key: str) -> list[tuple[int, int]]:
    return [(c.start, c.stop) for c in h.settled[key][1].chunks]


def test_a_sized_map_starts_with_one_budgeted_chunk_per_cpu_and_runs_in_one_wave_when_fast():
    @rf.flow
    def one():
        return double.map(range(N))

    h = Harness(one.graph)
    h.launch("double")
    assert [(w.job.start, w.job.size, w.job.budget) for w in h.submitted] == [(0, N // 2, R.FIRST_BUDGET), (N // 2, N // 2, R.FIRST_BUDGET)]
    h.run_all()  # fast items: each chunk ends well within its budget, whole
    assert len(h.submitted) == 2 and _ranges(h, "double") == [(0, N // 2), (N // 2, N)]
    assert h.settled["double"][0].message == f"{N} items: {N} ok"
    assert h.values("double") == [2 * x for x in range(N)]


def test_a_chunk_stopped_at_its_budget_is_its_first_items_and_the_rest_is_cut_by_the_time_measured():
    @rf.flow
    def one():
        return double.map(range(N))

    h = Harness(one.graph)
    h.launch("double")
    _stop_now(h)  # stopped after its first block: one item, in 1 ms (not yet trusted)
    run = h.coord.maps["double"]
    # the items it did not reach, cut at 0.25 s per chunk at 1 ms per item, unbudgeted; 2 x CPUs in flight
    assert [(w.job.start, w.job.size, w.job.budget) for w in h.submitted[2:]] == [(1, 250, 0.0), (251, 250, 0.0), (501, 250, 0.0)]
    assert [(c.start, c.stop, c.started) for c in run.chunks] == [
        (0, 1, True), (1, 251, True), (251, 501, True), (501, 751, True), (751, 10_000, False), (10_000, N, True),
    ]  # the rest not started yet: a map consuming this one stops there
    h.run_all()
    ranges = _ranges(h, "double")
    assert ranges[0] == (0, 1) and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])) and ranges[-1][1] == N
    assert all(len(c.handles) == 1 for c in h.settled["double"][1].chunks)
    assert h.settled["double"][0].message == f"{N} items: {N} ok"
    assert h.values("double") == [2 * x for x in range(N)]
    assert run.reduce_parts() is None  # no rf.reduce folded here; every chunk's one result is kept


def test_items_failing_and_retried_across_a_cut_keep_their_states_and_a_consuming_map_follows(monkeypatch):
    monkeypatch.setattr(sizer, "SMALL_MAP", 1000)  # 2,000 items are budgeted
    n = 2000

    @rf.flow
    def chained():
        return double.with_options(name="after", skip_on_upstream_skip=False).map(fails_some.map(range(n)))

    h = Harness(chained.graph)
    h.launch("fails_some")
    h.launch("after")
    _stop_now(h)  # fails_some's first chunk: [0, 1); item 5 is in the items it did not reach
    upstream = h.coord.maps["fails_some"]
    assert [c.stop for c in upstream.chunks][:2] == [1, 251]
    h.run_all()
    assert "fails_some" not in h.settled  # items 5 and 1,500 wait for their retry
    h.clock.now += 5.0
    h.take(h.coord.pump_due(h.clock.now))
    h.run_all()
    state, _ = h.settled["fails_some"]
    assert state.type is T.FAILED and state.message.startswith(f"{n} items: {n - 2} ok, 2 failed; first error: item 5: ValueError: bad 5")
    assert upstream.outcomes() == {5: C.FAILED, 1500: C.FAILED}
    assert {k: v for k, v in upstream.tally.items() if v} == {"SUCCESS": n - 2, "FAILED": 2}
    after = h.coord.maps["after"]  # cut along the upstream's chunks, the cut included; its gated items named
    assert h.settled["after"][0].type is T.FAILED and after.outcomes() == {5: C.TRIGGER_FAILED, 1500: C.TRIGGER_FAILED}
    assert [(c.start, c.stop) for c in after.chunks] == [(c.start, c.stop) for c in upstream.chunks]


def test_a_worker_that_cannot_stop_a_chunk_midway_runs_its_first_items_only():
    @rf.flow
    def timed():
        return double.with_options(timeout=60).map(range(N))

    h = Harness(timed.graph)
    h.launch("double")
    spec, work, handles = h.pending.pop(0)
    value, report = execute(spec.payload, work, *[x.value for x in handles])
    assert report.size == BUDGET_PROBE and len(value.codes) == BUDGET_PROBE
    assert list(C.successful_values(value).items()) == [2 * x for x in range(BUDGET_PROBE)]
    h.take(h.coord.finish_work(work, report, LocalBox(value), None))
    h.run_all()
    assert h.settled["double"][0].message == f"{N} items: {N} ok" and h.values("double") == [2 * x for x in range(N)]


def test_no_budget_for_small_maps_fixed_chunks_or_a_map_of_unknown_size():
    sizer = R.ChunkSizer(None, cpus=2, budgeted=True)
    assert sizer.budget(R.SMALL_MAP) == 0.0 and sizer.budget(None) == 0.0 and sizer.size(None) == R.FIRST_CHUNK
    assert sizer.budget(R.SMALL_MAP + 1) == R.FIRST_BUDGET and sizer.size(R.SMALL_MAP + 1) == R.SMALL_MAP // 2 + 1
    assert R.ChunkSizer(1000, cpus=2, budgeted=True).budget(10**6) == 0.0
    assert R.ChunkSizer(None, cpus=2, batch=True, budgeted=True).budget(10**6) == 0.0
    sizer.measure(1000, 0.01)
    assert sizer.budget(10**6) == 0.0  # measured: chunks are sized, and run whole


@rf.task(persist=True)
def logged(x: int, root: str) -> int:
    with open(pathlib.Path(root) / "items.log", "a") as f:
        f.write(f"{x}\n")
    if x == 5 and (pathlib.Path(root) / "fail").exists():
        raise ValueError("five fails while the file is there")
    return 2 * x


@rf.flow(runner="local")
def cut_and_stored(root: str):
    return rf.reduce.sum(logged.map(range(1000), rf.unmapped(root)))


def test_a_resumed_map_loads_the_chunks_its_budgeted_run_cut_and_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAYFLOW_RESULTS", raising=False)
    monkeypatch.setattr(sizer, "FIRST_BUDGET", 1e-9)  # every first chunk stops after its first item
    monkeypatch.setattr(sizer, "SMALL_MAP", 100)  # and 1,000 items are budgeted
    (tmp_path / "fail").write_text("")
    failed = cut_and_stored.run(root=str(tmp_path))
    assert failed.state.type is T.FAILED and sorted(_ran(tmp_path)) == list(range(1000))
    chunks = sorted((c["start"], c["stop"]) for c in RunStore().run(failed.run_id)["chunks"] if c["task_key"] == "logged")
    assert chunks[0] == (0, 1) and (500, 501) in chunks  # each first chunk cut at its first item
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:])) and chunks[-1][1] == 1000
    (tmp_path / "fail").unlink()
    (tmp_path / "items.log").unlink()
    resumed = rf.resume(failed.run_id, flow=cut_and_stored)
    assert resumed.result() == sum(2 * x for x in range(1000)) and _ran(tmp_path) == [5]  # every stored chunk loaded


def _ran(root: pathlib.Path) -> list[int]:
    return [int(line) for line in (root / "items.log").read_text().split()]
