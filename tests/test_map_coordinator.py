"""The map coordinator alone: no orchestrator, no executor, a fake clock.

The coordinator decides and returns MapActions; this harness plays the
orchestrator's part by hand.  Works run in-process (``execute``, the worker's
own entry point) only when a test says so, so every intermediate decision -
how many works are in flight, what a retry waits for, what a stream is asked
for - is asserted exactly.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest

import rayflow as rf
from rayflow.engine import columns as C
from rayflow.engine.columns import next_items
from rayflow.engine.driver.local_executor import LocalBox
from rayflow.engine.maps import run as R
from rayflow.engine.maps.coordinator import MapActions, MapCoordinator
from rayflow.engine.maps.feeds import WholeFeed
from rayflow.engine.maps.run import MapRun
from rayflow.engine.plan import compile_plan
from rayflow.engine.protocol import MapHandle
from rayflow.engine.worker.execute import execute
from rayflow.states import ErrorInfo
from rayflow.states import StateType as T


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """Plays the orchestrator: keeps what the coordinator asked for, runs works on request."""

    def __init__(self, graph, cpus: int = 2, fuse: bool = False):
        # unfused unless a test says: these tests follow each map's own works (fusion: test_fusion)
        self.plan = compile_plan(graph) if fuse else dataclasses.replace(compile_plan(graph), fused=())
        self.clock = FakeClock()
        self.puts: list[object] = []
        ids = itertools.count(1)
        self.coord = MapCoordinator(self.plan, cpus=cpus, clock=self.clock, put=self._put, next_work_id=lambda: next(ids))
        self.pending: list[tuple] = []  # (spec, work, handles) submitted, not yet finished
        self.submitted: list = []  # every work, in order
        self.requests: list[tuple[int, int]] = []
        self.settled: dict[str, tuple] = {}
        self.cancelled: list[int] = []

    def _put(self, value):
        self.puts.append(value)
        return LocalBox(value)

    def take(self, actions: MapActions) -> MapActions:
        self.cancelled += actions.cancel
        self.pending += actions.submit
        self.submitted += [work for _, work, _ in actions.submit]
        self.requests += actions.requests
        for key, state, handle in actions.settled:
            assert key not in self.settled, f"{key} settled twice"
            self.settled[key] = (state, handle)
        return actions

    def launch(self, key: str) -> MapActions:
        actions = self.take(self.coord.launch(self.plan.by_key[key], {}, {}))
        return actions if actions else self.take(self.coord.pump_deferred())

    def run(self, index: int = 0) -> MapActions:
        """Run the ``index``-th pending work in this process and report it."""
        spec, work, handles = self.pending.pop(index)
        value, report = execute(spec.payload, work, *[h.value for h in handles])
        return self.take(self.coord.finish_work(work, report, LocalBox(value), None))

    def run_all(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            if not self.pending:
                return
            self.run()
        raise AssertionError("works never stopped coming")

    def values(self, key: str) -> list:
        state, handle = self.settled[key]
        assert isinstance(handle, MapHandle)
        out = []
        for chunk in handle.chunks:
            out.extend(C.successful_values(C.merge_results([h.value for h in chunk.handles])))
        return out


@rf.task
def double(x: int) -> int:
    return 2 * x


@rf.task
def picky(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


# -- chunk sizing --------------------------------------------------------------------------


def _run_for(total: int, cpus: int = 2, **options) -> MapRun:
    @rf.flow
    def one():
        return double.with_options(**options).map(range(2))  # the feed below says how many items

    spec = compile_plan(one.graph).by_key["double"]
    return MapRun("double", spec.options, [WholeFeed("x", "column", None, total)], max_in_flight=4, cpus=cpus, clock=FakeClock())


@pytest.mark.parametrize(
    "total, options, measured, expected",
    [  # measured: (items, seconds) of the largest first-run chunk so far, and whether that is trusted
        (10**6, {}, None, R.FIRST_CHUNK),  # nothing measured yet: the first wave is small
        (R.SMALL_MAP + 1, {}, None, R.FIRST_CHUNK),  # measured first from SMALL_MAP items on
        (10**4, {}, None, 5000),  # a small sized map: one chunk per CPU, all at once, unmeasured
        (3, {}, None, 2),
        (10**6, {"chunk_size": 1000}, (64, 0.064, True), 1000),  # the user's size always wins
        (10**6, {}, (64, 0.064, True), 250),  # 1 ms items: a chunk of TARGET_SECONDS
        (10**6, {}, (200_000, 0.02, True), 125_000),  # fast items: at most total / (4 * cpus)
        (10**6, {}, (64, 1e-4, False), 64 * 256),  # not trusted (1e-4 s < 0.01 s): grows at most 256-fold
        (10**6, {}, (16384, 0.008, False), 125_000),  # 0.5 us items, 8 ms: straight to the size aimed at
        (10**6, {}, (64, 0.005, False), 3200),  # slower items: what 0.25 s needs (78 us per item)
        (10**9, {}, (10**6, 0.5, True), R.MAX_CHUNK),  # never more than MAX_CHUNK items
        (100, {}, (64, 0.02, True), 13),  # small maps still spread over 4 chunks per CPU
        (10**6, {"batch": True}, None, 500_000),  # batch=True, sized: one chunk per CPU, unmeasured, at any size
        (10**7, {"batch": True}, None, R.MAX_BATCH_CHUNK),  # but at most MAX_BATCH_CHUNK items
        (10**6, {"batch": True}, (500_000, 0.5, True), 125_000),  # measured: the per-item rules, as any map
        (10**6, {"batch": True, "chunk_size": 1000}, None, 1000),  # the user's size still wins
    ],
)
def test_chunk_size_table(total, options, measured, expected):
    run = _run_for(total, **options)
    if measured is not None:
        items, seconds, trusted = measured
        run.sizer.measure(items, seconds)
        assert run.sizer.trusted is trusted and run.sizer.per_item == pytest.approx(seconds / items)
    assert run.chunk_size() == expected


@pytest.mark.parametrize(
    "total, at_once, measured, expected",
    [  # I/O-bound items (async, concurrency=): a chunk runs `at_once` of them at a time, 2 CPUs
        (200, 32, None, 32),  # first chunks: one wave each
        (200, 100, None, 100),  # a wave as wide as concurrency allows: one chunk per CPU
        (50, 100, None, 25),  # a small map: its share per CPU
        (10**6, 32, (32, 0.2), 32),  # 0.2 s waves: 0.25 s of work is one wave
        (10**6, 32, (32, 0.0021), 3808),  # fast items: whole waves (3809 aimed at: 119 waves of 32)
        (10**5, 8, (8, 1.0), 8),  # slow waves: never less than one
    ],
)
def test_chunk_size_of_io_bound_items_is_whole_waves(total, at_once, measured, expected):
    sizer = R.ChunkSizer(None, cpus=2, at_once=at_once)
    if measured is not None:
        sizer.measure(*measured)
    assert sizer.size(total) == expected


def test_a_map_of_unknown_size_is_measured_from_small_chunks_first_even_batch():
    assert R.ChunkSizer(None, cpus=2).size(None) == R.FIRST_CHUNK  # a generator's, say
    assert R.ChunkSizer(None, cpus=2, batch=True).size(None) == R.FIRST_CHUNK


def test_a_map_of_fractional_cpu_chunks_counts_that_many_more_cpus():
    @rf.flow
    def shared():
        return double.with_options(num_cpus=0.25).map(range(R.SMALL_MAP + 1))  # measured first: 64-item chunks

    harness = Harness(shared.graph, cpus=2)
    harness.launch("double")
    run = harness.coord.maps["double"]
    assert run.sizer.cpus == 8 and run.max_in_flight == 16 and len(harness.pending) == 8  # measuring: one per CPU


def test_only_the_largest_measurement_counts_and_a_faster_smaller_one_lowers_it():
    run = _run_for(10**6)
    run.sizer.measure(1000, 0.05)
    run.sizer.measure(64, 0.5)  # a smaller chunk (a slow worker, say) does not undo it
    assert run.sizer.per_item == pytest.approx(5e-5) and run.chunk_size() == 5000
    slow_start = _run_for(10**6)
    slow_start.sizer.measure(64, 0.48)  # the first wave paid a one-off cost (an import, say)
    assert slow_start.chunk_size() == 33
    slow_start.sizer.measure(33, 0.0033)  # the next chunks show the items' real time
    assert slow_start.sizer.per_item == pytest.approx(1e-4) and slow_start.chunk_size() == 2500


def test_chunks_grow_from_the_measured_time_of_the_first_wave():
    @rf.flow
    def one():  # a timeout: its worker cannot stop a chunk at its budget, and runs its first 64 items
        return double.with_options(timeout=60).map(range(100_000))

    h = Harness(one.graph)
    h.launch("double")
    # the first wave: one chunk per CPU (more would queue in Ray ahead of the chunks sized from it), budgeted
    assert [(w.job.size, w.job.budget) for w in h.submitted] == [(50_000, R.FIRST_BUDGET)] * 2
    spec, work, handles = h.pending.pop(0)
    value, report = execute(spec.payload, work, *[x.value for x in handles])
    assert report.size == R.FIRST_CHUNK
    report.started_at, report.finished_at = 0.0, 0.005  # 64 items in 5 ms: not yet trusted
    h.take(h.coord.finish_work(work, report, LocalBox(value), None))
    # 0.25 s at 78 us per item, up to 2 x CPUs in flight, from the items the first chunk did not reach
    assert [(w.job.start, w.job.size, w.job.budget) for w in h.submitted[2:]] == [(64 + 3200 * i, 3200, 0.0) for i in range(3)]


# -- backpressure --------------------------------------------------------------------------


def test_at_most_max_in_flight_works_per_map():
    @rf.flow
    def one():
        return double.with_options(chunk_size=10).map(range(1000))

    h = Harness(one.graph, cpus=2)
    h.launch("double")
    assert len(h.pending) == 4  # 2 * cpus
    for _ in range(20):
        before = len(h.submitted)
        h.run()
        assert len(h.pending) == 4 and len(h.submitted) == before + 1  # one finished, one more
    h.run_all()
    state, handle = h.settled["double"]
    assert state.type is T.MAPPED and state.message == "1000 items: 1000 ok"
    assert handle.total == 1000 and len(handle.chunks) == 100
    assert h.values("double") == [2 * x for x in range(1000)]


def test_max_in_flight_option_and_a_consumed_map_leaves_room_for_its_consumer():
    @rf.flow
    def chained():
        return double.with_options(name="b", chunk_size=10).map(double.with_options(name="a", chunk_size=10).map(range(100)))

    h = Harness(chained.graph, cpus=2)
    h.launch("a")
    assert len(h.pending) == 2  # a map consumed chunk by chunk: cpus, not 2 * cpus
    h.launch("b")
    assert len(h.pending) == 2  # nothing of a is final yet
    h.run()  # a's chunk 0 finishes: b's chunk 0 can start at once
    assert [w.task_key for _, w, _ in h.pending] == ["a", "b", "a"]
    h.run_all()
    assert h.settled["a"][0].type is T.MAPPED and h.settled["b"][0].type is T.MAPPED
    assert h.values("b") == [4 * x for x in range(100)]

    @rf.flow
    def serial():
        return double.with_options(chunk_size=10, max_in_flight=1).map(range(100))

    h = Harness(serial.graph, cpus=2)
    h.launch("double")
    assert len(h.pending) == 1


# -- retries -------------------------------------------------------------------------------


def test_an_item_retry_waits_for_its_delay_on_the_clock_then_runs_alone():
    @rf.flow
    def one():
        return picky.with_options(retries=2, retry_delay=5.0, retry_backoff=2.0).map(range(10))

    h = Harness(one.graph)
    h.launch("picky")
    h.run_all()
    assert "picky" not in h.settled
    assert h.coord.next_due() == 1005.0
    h.clock.now = 1004.9
    assert not h.take(h.coord.pump_due(h.clock.now))
    h.clock.now = 1005.0
    h.take(h.coord.pump_due(h.clock.now))
    retry = h.submitted[-1].job
    assert retry.indices == (3,) and retry.attempts == (2,)
    h.run()
    assert h.coord.next_due() == 1015.0  # the second retry waits 5 * 2
    h.clock.now = 1015.0
    h.take(h.coord.pump_due(h.clock.now))
    assert h.submitted[-1].job.attempts == (3,)
    h.run()
    state, _ = h.settled["picky"]
    assert state.type is T.FAILED  # min_success_ratio 1.0
    assert state.message.startswith("10 items: 9 ok, 1 failed; first error: item 3: ValueError: three")
    assert h.coord.maps["picky"].outcomes() == {3: C.FAILED}


def test_an_error_outside_retry_on_is_final_at_once():
    @rf.flow
    def one():
        return picky.with_options(retries=3, retry_on=(KeyError,), min_success_ratio=0.5).map(range(10))

    h = Harness(one.graph)
    h.launch("picky")
    h.run_all()
    assert h.coord.next_due() is None
    assert h.settled["picky"][0].type is T.MAPPED
    assert h.values("picky") == [0, 1, 2, 4, 5, 6, 7, 8, 9]


# -- works lost with their worker: narrowed down to the item at fault ------------------------

LOST = ErrorInfo(type="ray.exceptions.WorkerCrashedError", message="The worker died unexpectedly", system=True)


def _items(work) -> list[int]:
    job = work.job
    return [job.start + i for i in job.indices] if job.indices is not None else list(range(job.start, job.start + job.size))


def run_with_crashes(h: Harness, kills, limit: int = 10_000) -> list[list[int]]:
    """Run every pending work in order; one for which ``kills(items, work)`` is true dies with its
    worker instead (reported lost, as RayExecutor reports a dead worker).  Returns the items of
    each work that died."""
    died = []
    for _ in range(limit):
        if not h.pending:
            return died
        spec, work, handles = h.pending[0]
        if kills(_items(work), work):
            h.pending.pop(0)
            died.append(_items(work))
            h.take(h.coord.finish_work(work, None, None, LOST))
        else:
            h.run()
    raise AssertionError("works never stopped coming")


def test_a_dead_worker_is_narrowed_down_to_the_item_that_killed_it():
    """200 items in chunks of 64, item 7 kills its worker: its chunk's items are run again in
    halves until item 7 runs alone; only item 7 fails, named; no healthy item runs twice more."""

    @rf.flow
    def one():
        return double.with_options(chunk_size=64).map(range(200))

    h = Harness(one.graph)
    h.launch("double")
    died = run_with_crashes(h, lambda items, work: 7 in items)
    assert [len(items) for items in died] == [64, 32, 16, 8, 4, 2, 1]  # log2(64) splits, then alone
    assert died[-1] == [7]
    assert [w.job.deaths for w in h.submitted if 7 in _items(w)] == [0, 1, 2, 3, 4, 5, 6]
    state, handle = h.settled["double"]
    assert state.type is T.FAILED  # min_success_ratio=1.0
    assert "200 items: 199 ok, 1 failed; first error: item 7: WorkerCrashedError: the worker died while running item 7, alone (7 works holding it died): The worker died unexpectedly" in state.message
    assert h.values("double") == [2 * x for x in range(200) if x != 7]
    run = h.coord.maps["double"]
    assert run.outcomes() == {7: C.FAILED} and run.counts() == {T.SUCCESS: 199, T.FAILED: 1}
    assert [(c.start, c.stop) for c in handle.chunks][:8] == [(0, 4), (4, 6), (6, 7), (7, 8), (8, 16), (16, 32), (32, 64), (64, 128)]
    merged = C.merge_results([b.value for b in handle.chunks[3].handles])  # the chunk of item 7 alone
    kind, message, _ = merged.errors[0]
    assert kind == LOST.type and message.startswith("the worker died while running item 7")
    finished = [i for w in h.submitted if 7 not in (items := _items(w)) for i in items]
    assert sorted(finished) == [x for x in range(200) if x != 7]  # each healthy item ended in one work: none ran twice after
    assert sum(len(items) for items in died) == 127  # what the deaths cost: under twice the chunk


def test_a_work_of_one_item_that_dies_runs_again_within_system_retries_then_fails_named():
    @rf.flow
    def one():
        return double.with_options(chunk_size=1, system_retries=2).map(range(6))

    h = Harness(one.graph)
    h.launch("double")
    died = run_with_crashes(h, lambda items, work: items == [3])
    assert died == [[3], [3], [3]]  # the first run and its 2 system retries
    state, _ = h.settled["double"]
    assert "first error: item 3: WorkerCrashedError: the worker died while running item 3, alone (3 works holding it died)" in state.message
    assert h.values("double") == [0, 2, 4, 8, 10]


def test_a_worker_killed_once_costs_its_chunk_two_halves_and_no_item():
    """A passing death (a killed worker, a lost node): the halves run and every item succeeds."""

    @rf.flow
    def one():
        return double.with_options(chunk_size=10, system_retries=0).map(range(20))

    h = Harness(one.graph)
    h.launch("double")
    died = run_with_crashes(h, lambda items, work: work.work_id == 1)
    assert died == [list(range(10))]
    assert h.settled["double"][0].type is T.MAPPED
    assert h.values("double") == [2 * x for x in range(20)]
    assert [(w.job.start, w.job.size, w.job.indices) for w in h.submitted[2:]] == [(0, 5, None), (5, 5, None)]


@rf.task(retries=1)
def two_and_five_fail(x: int) -> int:
    if x in (2, 5):
        raise ValueError(f"bad {x}")
    return x


def test_a_lost_retry_of_some_items_is_split_into_retries_of_its_halves():
    """Items 2 and 5 fail and are retried together; item 5's retry kills the worker: the retry is
    split, item 2 fails with its own error, item 5 alone ends named."""

    @rf.flow
    def one():
        return two_and_five_fail.with_options(chunk_size=10, system_retries=1).map(range(10))

    h = Harness(one.graph)
    h.launch("two_and_five_fail")
    h.run()
    h.clock.now += 100
    h.take(h.coord.pump_due(h.clock.now))
    died = run_with_crashes(h, lambda items, work: 5 in items and work.job.indices is not None)
    assert died == [[2, 5], [5]]  # the retry, then item 5 alone: 2 deaths, over its 1 system retry
    run = h.coord.maps["two_and_five_fail"]
    assert run.outcomes() == {2: C.FAILED, 5: C.FAILED}
    state, handle = h.settled["two_and_five_fail"]
    merged = C.merge_results([b.value for b in handle.chunks[0].handles])
    assert merged.errors[2][:2] == ("builtins.ValueError", "bad 2")
    assert merged.errors[5][1].startswith("the worker died while running item 5, alone (2 works holding it died)")
    assert h.values("two_and_five_fail") == [0, 1, 3, 4, 6, 7, 8, 9]


_STOPPED: set[int] = set()  # items of loop_then_fail that failed once (the harness runs works in this process)


@rf.task
def loop_then_fail(x: int) -> object:
    """Items 2 and 5 loop once, then fail in their iteration 2 on its first run."""
    context = rf.context()
    if x not in (2, 5):
        return x
    if context.loop_count == 1:
        raise rf.Loop(result=x * 10)
    if x not in _STOPPED:
        _STOPPED.add(x)
        raise ValueError(f"item {x} stopped in iteration {context.loop_count}")
    return context.loop_count, context.loop_result


def test_where_an_item_stopped_mid_loop_goes_with_every_work_that_runs_it_again():
    """Items 2 and 5 fail in iteration 2: their retry carries where each stopped; it dies with its
    worker and is split: each half carries its own item's; each resumes at iteration 2."""
    import cloudpickle

    _STOPPED.clear()

    @rf.flow
    def one():
        return loop_then_fail.with_options(chunk_size=10, retries=1).map(range(10))

    h = Harness(one.graph)
    h.launch("loop_then_fail")
    h.run()
    assert h.submitted[0].job.looped == ()  # a first run: nothing to resume
    h.clock.now += 100
    h.take(h.coord.pump_due(h.clock.now))
    died = run_with_crashes(h, lambda items, work: work.job.indices == (2, 5))
    assert died == [[2, 5]]
    looped = [(w.job.indices, {i: cloudpickle.loads(s) for i, s in w.job.looped}) for w in h.submitted[1:]]
    assert looped == [((2, 5), {2: (2, 20), 5: (2, 50)}), ((2,), {2: (2, 20)}), ((5,), {5: (2, 50)})]
    assert h.values("loop_then_fail") == [0, 1, (2, 20), 3, 4, (2, 50), 6, 7, 8, 9]  # (loop_count, loop_result)
    assert all(c.loops is None for c in h.coord.maps["loop_then_fail"].chunks)  # final items hold none


def test_splitting_stops_at_max_splits_and_then_lost_works_fail_whole(monkeypatch):
    """A function that kills every worker: the map splits MAX_SPLITS works, then fails the rest whole."""
    monkeypatch.setattr(R, "MAX_SPLITS", 3)

    @rf.flow
    def one():
        return double.with_options(chunk_size=16, system_retries=1).map(range(16))

    h = Harness(one.graph)
    h.launch("double")
    died = run_with_crashes(h, lambda items, work: True)
    assert [len(items) for items in died] == [16, 8, 8, 4, 4, 4, 4]  # 3 splits; each quarter had died twice already
    state, _ = h.settled["double"]
    assert "16 items: 0 ok, 16 failed" in state.message
    assert "items 0-3 (3 times; not narrowed down: this map split 3 lost works already)" in state.message
    assert h.coord.maps["double"].outcomes() == dict.fromkeys(range(16), C.FAILED)


def test_a_map_over_a_narrowed_map_follows_its_halves():
    """The upstream's lost chunk becomes chunks of its halves: the map streaming from it runs
    along them, and item 3's failure gates item 3 downstream only."""

    @rf.flow
    def two():
        return double.map(double.with_options(name="first", chunk_size=10).map(range(20)))

    h = Harness(two.graph)
    h.launch("first")
    h.launch("double")
    died = run_with_crashes(h, lambda items, work: work.task_key == "first" and 3 in items)
    assert [len(items) for items in died] == [10, 5, 3, 2, 1]
    assert h.values("double") == [4 * x for x in range(20) if x != 3]
    assert h.coord.maps["double"].outcomes() == {3: C.TRIGGER_FAILED}
    starts = [(w.job.start, w.job.size) for w in h.submitted if w.task_key == "double"]
    assert sorted(starts) == [(0, 2), (2, 1), (3, 1), (4, 1), (5, 5), (10, 10)]


def test_a_stale_completion_after_cancel_changes_nothing():
    @rf.flow
    def one():
        return double.with_options(chunk_size=10).map(range(100))

    h = Harness(one.graph)
    h.launch("double")
    in_flight = [w.work_id for _, w, _ in h.pending]
    cancelled = h.take(h.coord.cancel())
    assert cancelled.cancel == in_flight and not cancelled.settled  # the orchestrator settles CANCELLED itself
    assert not h.coord.owns(in_flight[0])
    assert not h.run()  # a work that still reports afterwards is ignored
    assert "double" not in h.settled


# -- streams (generator inputs) ------------------------------------------------------------


def test_a_stream_is_asked_for_one_chunk_at_a_time_and_ends_when_exhausted():
    @rf.flow
    def gen():
        return double.map(x for x in range(100))

    h = Harness(gen.graph)
    stream = iter(h.plan.streams[0])
    h.launch("double")
    assert h.requests == [(0, R.FIRST_CHUNK)] and not h.pending  # nothing to run before items arrive

    def feed() -> None:
        while h.requests:
            stream_id, count = h.requests.pop(0)
            column, n, exhausted = next_items(stream, count)
            h.coord.push_stream(stream_id, LocalBox(column) if column is not None else None, n, exhausted)
        assert h.coord.has_stream_input()
        h.take(h.coord.drain_streams())

    feed()
    assert len(h.pending) == 1 and h.pending[0][1].job.size == R.FIRST_CHUNK
    assert h.requests == [(0, R.FIRST_CHUNK)]  # the next chunk's items, while the first runs
    feed()  # 36 items and exhausted
    assert [w.job.size for _, w, _ in h.pending] == [64, 36] and not h.requests
    h.run_all()
    state, handle = h.settled["double"]
    assert state.type is T.MAPPED and handle.total == 100
    assert h.values("double") == [2 * x for x in range(100)]


def test_a_lost_chunk_of_a_stream_keeps_its_segment_until_every_half_is_final():
    """Halves of a lost chunk of generator items run from the chunk's segment, which is let go
    (its items freed) only once both halves are final."""

    @rf.flow
    def gen():
        return double.with_options(chunk_size=8).map(x for x in range(16))

    h = Harness(gen.graph)
    stream = iter(h.plan.streams[0])
    h.launch("double")

    def feed() -> None:
        while h.requests:
            stream_id, count = h.requests.pop(0)
            column, n, exhausted = next_items(stream, count)
            h.coord.push_stream(stream_id, LocalBox(column) if column is not None else None, n, exhausted)
        h.take(h.coord.drain_streams())

    feed()
    feed()
    leader = h.coord.maps["double"].leader
    spec, work, handles = h.pending.pop(0)
    assert _items(work) == list(range(8))
    h.take(h.coord.finish_work(work, None, None, LOST))
    assert [(w.job.start, w.job.size) for _, w, _ in h.pending] == [(8, 8), (0, 4), (4, 4)]
    h.run(1)  # the first half
    assert leader.segments()[0].handles != ()  # the second half still needs the segment's items
    h.run(1)
    assert leader.segments()[0].handles == ()
    h.run_all()
    feed()  # the generator is exhausted
    assert h.values("double") == [2 * x for x in range(16)]


def test_an_unsized_upstream_fails_the_map_at_launch_without_any_work():
    @rf.task
    def number() -> int:
        return 3

    @rf.flow
    def bad():
        return double.map(number())

    h = Harness(bad.graph)
    h.take(h.coord.launch(h.plan.by_key["double"], {"number": LocalBox(3)}, {"number": None}))
    state, handle = h.settled["double"]
    assert state.type is T.FAILED and "cannot be mapped over" in state.message and handle is None
    assert not h.submitted
