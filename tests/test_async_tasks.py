"""``async def`` tasks and ``concurrency=``: I/O-bound items of a chunk at once, each item's
state, retries, timeout and log records its own.  On both runners; overlap is checked from
the intervals the items record, never from wall-clock limits."""

from __future__ import annotations

import asyncio
import inspect
import pathlib
import re
import threading
import time

import pytest

import rayflow as rf
from rayflow.exceptions import DefinitionError
from rayflow.states import StateType as T
from rayflow.store import RunStore


@rf.task
async def plus_one(x: int) -> int:
    await asyncio.sleep(0.01)
    return x + 1


@rf.task(chunk_size=30)
async def waits(i: int, seconds: float) -> tuple[int, float, float]:
    started = time.time()
    await asyncio.sleep(seconds)
    rf.get_run_logger().info("item %d waited", i)
    if i == 7:
        raise ValueError("seven is unlucky")
    return i, started, time.time()


@rf.task(chunk_size=24, concurrency=8)
def blocks(i: int, seconds: float) -> tuple[int, float, float]:
    started = time.time()
    time.sleep(seconds)
    return i, started, time.time()


def most_at_once(intervals: list[tuple[int, float, float]]) -> int:
    """The largest number of intervals open at one moment."""
    events = sorted([(s, 1) for _, s, _ in intervals] + [(e, -1) for _, _, e in intervals])
    running = best = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


def test_an_async_task_runs_and_outside_a_flow_is_a_coroutine_function(runner):
    @rf.flow
    def one(x: int) -> int:
        return plus_one(plus_one(x))

    assert one.with_options(runner=runner).run(x=1).result() == 3
    called = plus_one(1)  # outside a flow: what the async def itself returns
    assert inspect.iscoroutine(called) and asyncio.run(called) == 2


def test_an_async_map_runs_a_chunks_items_at_once_and_each_fails_alone(runner):
    @rf.flow
    def many(n: int) -> list:
        return waits.map(range(n), seconds=rf.unmapped(0.2))

    run = many.with_options(runner=runner).run(n=60)
    values = run.task_result("waits")
    assert [v[0] if v else None for v in values] == [i if i != 7 else None for i in range(60)]
    assert most_at_once([v for v in values if v]) >= 10  # 30 per chunk, up to 32 at once on its loop
    states = run.map_states("waits")
    assert states[7].type is T.FAILED and "seven is unlucky" in states[7].message
    assert sum(s.type is T.SUCCESS for s in states) == 59
    records = [r for r in RunStore().logs(run.run_id, task="waits") if r["message"].endswith("waited")]
    assert len(records) == 60 and all(r["message"] == f"item {r['map_index']} waited" for r in records)


def test_async_items_retry_time_out_and_skip_alone(runner, tmp_path):
    marker = tmp_path / "failed-once"

    @rf.task(retries=1, timeout=0.5, concurrency=4)
    async def fickle(i: int, marker: str) -> int:
        if i == 3 and not pathlib.Path(marker).exists():
            pathlib.Path(marker).write_text("x")
            raise ConnectionError("flaky")
        if i == 5:
            await asyncio.sleep(30)  # past its 0.5 s: cancelled on the loop, the others go on
        if i == 6:
            raise rf.Skip("nothing to fetch")
        await asyncio.sleep(0.05)
        return i

    @rf.flow
    def flow(n: int) -> list:
        return fickle.map(range(n), marker=rf.unmapped(str(marker)))

    started = time.monotonic()
    run = flow.with_options(runner=runner).run(n=10)
    states = run.map_states("fickle")
    assert states[3].type is T.SUCCESS and states[3].attempt == 2  # failed once, retried
    assert states[5].type is T.TIMED_OUT
    assert states[6].type is T.SKIPPED
    assert [s.type for i, s in enumerate(states) if i not in (5, 6)] == [T.SUCCESS] * 8
    assert time.monotonic() - started < 25  # the 30 s sleep was cancelled, not waited for


def test_a_plain_task_with_concurrency_runs_items_on_threads(runner):
    @rf.task(concurrency=4, timeout=0.5)
    def slow_one(i: int) -> str:
        time.sleep(3 if i == 2 else 0.05)
        return threading.current_thread().name

    @rf.flow
    def flow() -> tuple:
        return blocks.map(range(24), seconds=rf.unmapped(0.2)), slow_one.map(range(6))

    run = flow.with_options(runner=runner).run()
    values = run.task_result("blocks")
    assert [v[0] for v in values] == list(range(24))
    assert most_at_once(values) >= 4  # 8 threads, 24 items of 0.2 s
    states = run.map_states("slow_one")
    assert states[2].type is T.TIMED_OUT and "timed out after 0.5s" in states[2].message
    assert all(s.type is T.SUCCESS for i, s in enumerate(states) if i != 2)
    assert all(name.startswith("rayflow-item") for name in run.task_result("slow_one") if name)


def test_bad_definitions_are_refused_when_defined():
    with pytest.raises(DefinitionError, match="concurrency"):
        rf.task(concurrency=0)(lambda x: x)

    async def stream(x: int):
        yield x

    with pytest.raises(DefinitionError, match="async generator"):
        rf.task(stream)

    async def body() -> None:
        pass

    with pytest.raises(DefinitionError, match="flow bodies are plain functions"):
        rf.flow(body)


@rf.task(chunk_size=6)
async def sleeps_blocking(i: int) -> int:
    time.sleep(0.15)  # blocks the chunk's event loop: its other items wait
    await asyncio.sleep(0)
    return i


@rf.task
async def sleeps_blocking_alone() -> int:
    time.sleep(0.15)
    return 1


def test_an_async_task_that_blocks_its_event_loop_is_named_in_its_logs_once_per_chunk(runner):
    """Items of an async map that call time.sleep hold their chunk's loop one after another:
    each chunk's logs get one WARNING naming the task, the item and how long it held the
    loop (never one per item); a plain async task that blocks gets one too; a map that awaits
    (``waits``) gets none."""

    @rf.flow
    def blocking() -> list:
        return [sleeps_blocking.map(range(12)), sleeps_blocking_alone(), waits.map(range(6), seconds=rf.unmapped(0.01))]

    run = blocking.with_options(runner=runner).run()
    assert run.task_result("sleeps_blocking") == list(range(12))
    warnings = [r for r in RunStore().logs(run.run_id) if r["level"] == "WARNING"]
    mapped = [r for r in warnings if r["task_key"] == "sleeps_blocking"]
    assert len(mapped) == 2, warnings  # two chunks of 6: one line each
    for record in mapped:
        item = record["map_index"]
        held = re.search(rf"async task 'sleeps_blocking' blocked its event loop: item {item} held it for ([\d.]+) s", record["message"])
        assert held and 0.15 <= float(held.group(1)) < 1.0, record["message"]  # its 0.15 s sleep (later on a loaded machine)
        assert "6 of this chunk's 6 items blocked it" in record["message"] and "asyncio.to_thread" in record["message"]
    assert {r["map_index"] // 6 for r in mapped} == {0, 1}
    alone = [r for r in warnings if r["task_key"] == "sleeps_blocking_alone"]
    assert len(alone) == 1 and "async task 'sleeps_blocking_alone' blocked its event loop" in alone[0]["message"]
    assert not [r for r in warnings if r["task_key"] == "waits"]
