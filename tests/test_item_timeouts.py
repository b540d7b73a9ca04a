"""One item-timeout contract on both runners (issue 23): an item of a map past its task's
``timeout`` ends TIMED_OUT, and a retry of it is timed the same.  On a Ray worker's main
thread SIGALRM interrupts the item; on the in-process runner's threads (where SIGALRM
cannot reach) the item runs on a helper thread and is abandoned at its deadline, as the
in-process runner abandons a plain task past its timeout.  Before, the in-process runner
dropped the timeout without a word and the item ended SUCCESS.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import time

import pytest

import rayflow as rf
from rayflow.states import StateType as T


@rf.task(timeout=0.5, retries=1, chunk_size=4)
def held(x: int, root: str) -> int:
    """Item 1 waits for ``release`` (at most 20 s; a test releases it when its run is over)."""
    if x == 1:
        release = pathlib.Path(root) / "release"
        deadline = time.monotonic() + 20
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return x


def test_an_item_past_its_timeout_is_timed_out_on_every_runner(runner, tmp_path):
    @rf.flow
    def timed():
        return held.map(range(6), rf.unmapped(str(tmp_path)))

    try:
        run = timed.with_options(runner=runner).run()
    finally:
        (tmp_path / "release").touch()  # the abandoned item's thread (in-process runner) ends
    states = run.map_states("held")
    assert [s.type for s in states] == [T.SUCCESS, T.TIMED_OUT] + [T.SUCCESS] * 4
    assert states[1].attempt == 2 and "timed out after 0.5s" in states[1].message
    assert run.task_result("held") == [0, None, 2, 3, 4, 5]
    assert run.state.type is T.FAILED


# == every strategy, the same contract ============================================================
# An item runs by one of the strategies of engine/worker/item_runners.py, picked by the task and
# the thread; each must time out the same way on both runners.  A batch=True task's timeout
# bounds each call (one chunk of items): every item of the call past it ends TIMED_OUT.  Before,
# a batch=True task dropped its timeout: its held chunk ended SUCCESS after 20 s.


def _hold(xs, root: str) -> None:
    """While item 1 is among ``xs``, wait for ``release`` (at most 20 s)."""
    if 1 in xs:
        release = pathlib.Path(root) / "release"
        deadline = time.monotonic() + 20
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


async def _hold_async(xs, root: str) -> None:
    import asyncio

    if 1 in xs:
        release = pathlib.Path(root) / "release"
        deadline = time.monotonic() + 20
        while not release.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


@rf.task(timeout=0.5, retries=1, chunk_size=2, batch=True)
def held_batch(xs, root: str):
    _hold(xs.to_pylist(), root)
    return xs


@rf.task(timeout=0.5, retries=1, chunk_size=2, batch=True)
async def held_batch_async(xs, root: str):
    await _hold_async(xs.to_pylist(), root)
    return xs


@rf.task(timeout=0.5, retries=1, chunk_size=4, concurrency=2)
def held_threaded(x: int, root: str) -> int:
    _hold([x], root)
    return x


@rf.task(timeout=0.5, retries=1, chunk_size=4)
async def held_async(x: int, root: str) -> int:
    await _hold_async([x], root)
    return x


@rf.task(chunk_size=6)
def fails_on_zero(x: int) -> int:
    if x == 0:
        raise ValueError("zero")
    return x


def _timed(runner, tmp_path, flow):
    try:
        return flow.with_options(runner=runner).run()
    finally:
        (tmp_path / "release").touch()  # abandoned helper threads (in-process runner) end


def test_a_batch_call_past_its_timeout_times_out_every_item_it_was_given(runner, tmp_path):
    """A batch task's timeout bounds each call: the chunk holding item 1 ([0, 1]) times out
    whole, and its retry (the same two items, one call) too; the other chunks succeed."""

    @rf.flow
    def batched():
        return held_batch.map(range(6), rf.unmapped(str(tmp_path)))

    run = _timed(runner, tmp_path, batched)
    states = run.map_states("held_batch")
    assert [s.type for s in states] == [T.TIMED_OUT] * 2 + [T.SUCCESS] * 4
    assert all(s.attempt == 2 and "timed out after 0.5s" in s.message for s in states[:2])
    assert run.task_result("held_batch") == [None, None, 2, 3, 4, 5]
    assert run.state.type is T.FAILED


def test_an_async_batch_call_past_its_timeout_is_cancelled_and_times_out(runner, tmp_path):
    @rf.flow
    def batched():
        return held_batch_async.map(range(6), rf.unmapped(str(tmp_path)))

    run = _timed(runner, tmp_path, batched)
    states = run.map_states("held_batch_async")
    assert [s.type for s in states] == [T.TIMED_OUT] * 2 + [T.SUCCESS] * 4
    assert states[0].attempt == 2 and "timed out after 0.5s" in states[0].message


def test_threaded_async_and_gated_items_time_out_alike(runner, tmp_path):
    """Items on a thread pool (concurrency=2), on an event loop (async), and items run in order
    after others were gated (the first item's upstream failed): item 1 ends TIMED_OUT in each."""

    @rf.flow
    def strategies():
        root = rf.unmapped(str(tmp_path))
        gated = held.map(fails_on_zero.map(range(6)), root)
        return held_threaded.map(range(6), root), held_async.map(range(6), root), gated

    run = _timed(runner, tmp_path, strategies)
    for key in ("held_threaded", "held_async"):
        states = run.map_states(key)
        assert [s.type for s in states] == [T.SUCCESS, T.TIMED_OUT] + [T.SUCCESS] * 4, key
        assert states[1].attempt == 2 and "timed out after 0.5s" in states[1].message, key
    gated = run.map_states("held")
    assert [s.type for s in gated] == [T.TRIGGER_FAILED, T.TIMED_OUT] + [T.SUCCESS] * 4
    assert gated[1].attempt == 2


@rf.task(timeout=5, chunk_size=3, batch=True)
def raises_timeout_error(xs):
    raise TimeoutError("the service took too long")


def test_a_batch_call_that_raises_timeout_error_itself_fails_it_is_not_timed_out(runner):
    """The contract times out a call past its deadline only: a TimeoutError the function raises
    is its own failure (on a helper thread, futures' TimeoutError is the same class)."""

    @rf.flow
    def own():
        return raises_timeout_error.map(range(3))

    states = own.with_options(runner=runner).run().map_states("raises_timeout_error")
    assert [s.type for s in states] == [T.FAILED] * 3
    assert "the service took too long" in states[0].message


@rf.task(timeout=0.5, chunk_size=6, concurrency=2)
def stuck_then_release(x: int, root: str) -> int:
    """Items 0 and 1 are stuck for 1 s, then until a later item touches ``release`` (at most
    10 s, then they leave ``gave_up`` behind); items 2.. touch it."""
    where = pathlib.Path(root)
    if x < 2:
        deadline = time.monotonic() + 10
        time.sleep(1.0)  # past its 0.5 s timeout even if it starts after item 2 released (a loaded machine)
        while not (where / "release").exists():
            if time.monotonic() > deadline:
                (where / "gave_up").touch()
                break
            time.sleep(0.02)
    else:
        (where / "release").touch()
    return x


def test_threaded_items_past_their_timeout_give_their_slots_back(runner, tmp_path):
    """concurrency=2 with both threads stuck: at their deadline both items are TIMED_OUT and
    the chunk's next items run on new threads, as run_abandoning goes on with a new helper.
    Before, the abandoned threads kept their slots, so the next items waited for the stuck
    calls to return (here 10 s; forever for a call that never does)."""

    @rf.flow
    def stuck():
        return stuck_then_release.map(range(6), rf.unmapped(str(tmp_path)))

    run = _timed(runner, tmp_path, stuck)
    states = run.map_states("stuck_then_release")
    assert [s.type for s in states] == [T.TIMED_OUT] * 2 + [T.SUCCESS] * 4
    # the next items ran while the stuck calls still held (gave_up is written before they return)
    assert not (tmp_path / "gave_up").exists()


@rf.task(timeout=0.3)
async def stubborn(x: int, marks: str) -> int:
    """Item 1 swallows its cancellation and goes on until the test lets it end."""
    import asyncio

    release = pathlib.Path(marks) / "release"
    while x == 1 and not release.exists():
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass
    return x


def test_an_async_item_that_swallows_its_cancellation_is_abandoned_not_waited_for(runner, tmp_path, monkeypatch):
    """The chunk gives a cancelled call loops.CANCEL_GRACE seconds to unwind, then goes on
    without it (it ran until released before: the run waited for a coroutine that would not end).
    In this process (the local runner) the grace is 0.5 s, not 2 s: it is waited out twice, at
    the timeout and as the chunk's loop ends; a Ray worker keeps its 2 s."""
    import threading

    from rayflow.engine.worker import loops

    monkeypatch.setattr(loops, "CANCEL_GRACE", 0.5)

    @rf.flow
    def swallowing():
        return stubborn.map(range(4), rf.unmapped(str(tmp_path)))

    out: list = []
    thread = threading.Thread(target=lambda: out.append(swallowing.with_options(runner=runner).run()), daemon=True)
    thread.start()
    try:
        thread.join(60)
        assert not thread.is_alive(), "the run waited for a coroutine that swallowed its cancellation"
    finally:
        (tmp_path / "release").touch()
        thread.join(60)
    states = out[0].map_states("stubborn")
    assert [s.type for s in states] == [T.SUCCESS, T.TIMED_OUT, T.SUCCESS, T.SUCCESS]
    assert "timed out after 0.3s" in states[1].message


# == a looping item: its timeout bounds each iteration (engine.worker.looping.ItemLoop) ==========
# Before, an item was timed whole (all its iterations together) and a timed-out one was retried
# from its first iteration.


def _slow_iteration(pages: int, marks: str, stuck: int) -> bool:
    """Logs (loop_count, loop_result); iteration ``stuck`` hangs on its first run; True: loop again."""
    context = rf.context()
    os.makedirs(marks, exist_ok=True)
    with open(os.path.join(marks, f"{pages}.log"), "a") as log:
        log.write(f"{context.loop_count} {context.loop_result}\n")
    mark = os.path.join(marks, "stuck")
    if context.loop_count == stuck and not os.path.exists(mark):
        open(mark, "w").close()
        return None  # the caller hangs
    return context.loop_count < pages


@rf.task(timeout=0.4, retries=1)
def slow_item(pages: int, marks: str, stuck: int = 0) -> int:
    """Each iteration takes 0.15 s (all of them together more than the timeout)."""
    again = _slow_iteration(pages, marks, stuck)
    if again is None:
        time.sleep(1.0)
        raise RuntimeError("a stuck iteration is abandoned, not waited for")
    time.sleep(0.15)
    if again:
        raise rf.Loop(result=rf.context().loop_count)
    return rf.context().loop_count


@rf.task(timeout=0.4, retries=1)
async def slow_item_async(pages: int, marks: str, stuck: int = 0) -> int:
    again = _slow_iteration(pages, marks, stuck)
    await asyncio.sleep(1.0 if again is None else 0.15)
    if again:
        raise rf.Loop(result=rf.context().loop_count)
    return rf.context().loop_count


def test_an_items_timeout_bounds_each_iteration_and_a_timed_out_one_is_retried_there(runner, tmp_path):
    @rf.flow
    def timed(marks: str, stuck: int = 0):
        return slow_item.map([4], marks=marks, stuck=rf.unmapped(stuck))

    run = timed.with_options(runner=runner).run(marks=str(tmp_path / "whole"))
    assert run.state.type is T.SUCCESS, run.map_states("slow_item")
    assert run.result() == [4]  # 0.6 s in all: each iteration's deadline counts from its own start
    run = timed.with_options(runner=runner).run(marks=str(tmp_path / "stuck"), stuck=2)
    assert run.state.type is T.SUCCESS, run.map_states("slow_item")
    assert run.result() == [4]
    # iteration 2 timed out; its retry resumed it with loop_count 2 and iteration 1's loop_result
    assert (tmp_path / "stuck" / "4.log").read_text().splitlines() == ["1 None", "2 1", "2 1", "3 2", "4 3"]


@pytest.mark.parametrize("task", [slow_item.with_options(concurrency=2), slow_item_async], ids=["threaded", "async"])
def test_threaded_and_async_items_are_timed_per_iteration_and_retried_there(tmp_path, task):
    @rf.flow
    def timed(marks: str):
        return task.map([4], marks=marks, stuck=rf.unmapped(2))

    run = timed.with_options(runner="local").run(marks=str(tmp_path))
    assert run.state.type is T.SUCCESS, [(s.type, s.message) for s in run.map_states(task.name)]
    assert run.result() == [4]  # the retry's three iterations, 0.45 s together, each within 0.4 s
    assert (tmp_path / "4.log").read_text().splitlines() == ["1 None", "2 1", "2 1", "3 2", "4 3"]
