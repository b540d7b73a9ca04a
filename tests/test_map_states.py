"""What the orchestrator knows of a map's items: progress snapshots and the per-item view triggers see."""

from __future__ import annotations

import sys
import threading

import pytest

import rayflow as rf
from rayflow.engine import columns as C
from rayflow.engine.protocol import ChunkSummary
from rayflow.engine.driver.local_executor import LocalExecutor
from rayflow.engine.maps.item_states import ItemStates
from rayflow.engine.maps.feeds import WholeFeed
from rayflow.engine.maps.run import MapRun
from rayflow.engine.orchestrator import Orchestrator
from rayflow.engine.plan import compile_plan
from rayflow.states import State
from rayflow.states import StateType as T


def on(flow, runner):
    return flow.with_options(runner=runner)


# -- progress() from another thread ----------------------------------------------------


@rf.task
def ident(x: int) -> int:
    return x


@rf.flow
def many_maps():
    return [ident.with_options(name=f"m{i}", chunk_size=1).map(range(4)) for i in range(150)]


def test_progress_is_a_consistent_snapshot_while_the_run_loop_changes_the_maps():
    """The Ray actor answers progress() on another thread while its run loop launches maps and
    records chunks: the snapshot must never fail ("dictionary changed size during iteration")
    and a map reported done must have all its items counted."""
    plan = compile_plan(many_maps.graph)
    executor = LocalExecutor(4)
    orch = Orchestrator(plan, executor, "progress-race", cpus=2)
    errors: list[BaseException] = []
    snapshots = [0]
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                snap = orch.maps.progress()
                for key, p in snap.items():
                    if p["done"]:
                        assert sum(p["counts"].values()) == p["total"], (key, p)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return
            snapshots[0] += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race shows at once
    thread = threading.Thread(target=hammer, daemon=True)
    try:
        thread.start()
        summary = orch.run()
    finally:
        stop.set()
        thread.join(30)
        sys.setswitchinterval(interval)
        executor.shutdown()
    assert not errors, repr(errors[0])
    assert snapshots[0] > 0
    assert summary.state.is_successful()
    final = orch.maps.progress()
    assert len(final) == 150 and all(p["done"] and p["counts"] == {"SUCCESS": 4} for p in final.values())


# -- the per-item view: real item indexes ----------------------------------------------


@rf.task
def score(x: int) -> int:
    if x == 2:
        raise ValueError("bad item")
    return x


@rf.task
def best(xs: list) -> int:
    return max(xs)


def test_a_trigger_failure_names_the_item_that_failed(runner):
    """
    score.map(range(10))  (item 2 fails) --> best  (default trigger: all_successful)
    """

    @rf.flow
    def scored():
        return best(score.map(range(10)))

    run = on(scored, runner).run()
    state = run.task_states["best"]
    assert state.type is T.TRIGGER_FAILED
    assert "failed upstream task(s): score[2]" in state.message, state.message
    assert "score[9]" not in state.message


@rf.task(chunk_size=4, retries=1)
def flaky(x: int) -> int:
    if x in (1, 13):  # fail for good
        raise ValueError(f"no {x}")
    return x


@rf.task(chunk_size=3)
def halve(x: int) -> int:
    if x == 10:
        raise RuntimeError("ten")
    return x // 2


def _listing(ups) -> str:
    return ",".join(f"{key}={state.type.value}" for key, state in ups.items() if state.type is not T.SUCCESS)


def listing_trigger(ups) -> bool:
    """A custom trigger that shows what it saw: every non-successful upstream, in order."""
    raise RuntimeError("SAW:" + _listing(ups) + ":END")


@rf.task(trigger=listing_trigger)
def look(xs: list) -> list:
    return xs


def _seen(state: State) -> dict[str, str]:
    text = state.message.split("SAW:", 1)[1].split(":END", 1)[0]
    return dict(pair.split("=") for pair in text.split(",") if pair)


def test_triggers_see_each_item_at_its_own_index(runner):
    """
    flaky.map(range(16))   (chunks of 4; items 1 and 13 fail after a retry)
        --> halve.map      (element-wise, chunks of 3: items 1, 13 TRIGGER_FAILED, item 10 FAILED)
        --> look           (a trigger listing what it saw)
    The view a trigger gets agrees item for item with the states the run recorded.
    """

    @rf.flow
    def chained():
        halves = halve.map(flaky.map(range(16)))
        return look(halves)

    run = on(chained, runner).run()
    seen = _seen(run.task_states["look"])
    truth = {
        f"halve[{i}]": s.type.value for i, s in enumerate(run.map_states("halve")) if s.type is not T.SUCCESS
    }
    assert truth == {"halve[1]": "TRIGGER_FAILED", "halve[10]": "FAILED", "halve[13]": "TRIGGER_FAILED"}
    assert seen == truth


def test_the_first_error_of_a_map_names_the_item_by_its_index_in_the_map(runner):
    @rf.flow
    def later():
        return halve.with_options(chunk_size=4).map(range(12))  # item 10 fails, in the third chunk

    run = on(later, runner).run()
    assert "first error: item 10: RuntimeError: ten" in run.task_states["halve"].message, run.task_states["halve"].message


def test_a_lost_chunk_fails_exactly_its_items():
    run = MapRun("m", _options(), [WholeFeed("x", "column", None, 10)], max_in_flight=8, cpus=1, clock=lambda: 0.0)
    jobs = run.next_jobs(0.0)
    assert [(j.start, j.size) for j, _ in jobs] == [(0, 4), (4, 4), (8, 2)]
    run.on_summary(_summary(0, 4, {C.SUCCESS: 4}), "h0", 0.0)
    run.release(jobs[1][0])
    run.settle_lost(jobs[1][0], "lost", "worker died")
    run.on_summary(_summary(2, 2, {C.SUCCESS: 1, C.FAILED: 1}, failed=[(1, C.FAILED, False, 1)]), "h2", 0.0)
    assert run.done
    view = ItemStates({"m": run})
    assert {k: s.type for k, s in view.items() if s.type is not T.SUCCESS} == {
        "m[4]": T.FAILED, "m[5]": T.FAILED, "m[6]": T.FAILED, "m[7]": T.FAILED, "m[9]": T.FAILED,
    }


def _options(**kw):
    from rayflow.core.options import TaskOptions

    return TaskOptions(**{"chunk_size": 4, **kw})


def _summary(chunk, size, counts, failed=(), retry=(), indices=None, errors=()):
    return ChunkSummary(
        work_id=0, map_key="m", chunk=chunk, size=size, started_at=0.0, finished_at=0.001,
        counts=dict(counts), failed=list(failed), retry=list(retry), errors=list(errors), indices=indices,
    )


def test_item_states_keep_real_indexes_without_a_state_per_successful_item():
    """A 12-item map in chunks of 4: item 2 fails, item 6 fails then succeeds on its retry,
    item 9 times out after its retry, item 11 fails for good on its retry."""
    run = MapRun("score", _options(retries=1), [WholeFeed("x", "column", None, 12)], max_in_flight=8, cpus=1, clock=lambda: 0.0)
    jobs = run.next_jobs(0.0)
    assert len(jobs) == 3
    run.on_summary(_summary(0, 4, {C.SUCCESS: 3, C.FAILED: 1}, failed=[(2, C.FAILED, False, 1)]), "h0", 0.0)
    run.on_summary(_summary(1, 4, {C.SUCCESS: 3, C.FAILED: 1}, failed=[(2, C.FAILED, True, 1)]), "h1", 0.0)
    run.on_summary(
        _summary(2, 4, {C.SUCCESS: 2, C.FAILED: 1, C.TIMED_OUT: 1},
                 failed=[(1, C.TIMED_OUT, True, 1), (3, C.FAILED, True, 1)]),
        "h2", 0.0,
    )
    retries = run.next_jobs(1.0)
    assert sorted((j.chunk, j.indices) for j, _ in retries) == [(1, (2,)), (2, (1, 3))]
    run.on_summary(_summary(1, 1, {C.SUCCESS: 1}, indices=(2,)), "h1r", 1.0)
    run.on_summary(
        _summary(2, 2, {C.TIMED_OUT: 1, C.FAILED: 1}, failed=[(1, C.TIMED_OUT, True, 2), (3, C.FAILED, True, 2)], indices=(1, 3)),
        "h2r", 1.0,
    )
    assert run.done

    # only the non-successful final items are stored, per chunk
    assert [c.outcomes for c in run.chunks] == [{2: C.FAILED}, None, {1: C.TIMED_OUT, 3: C.FAILED}]

    view = ItemStates({"score": run, "plain": State(type=T.SUCCESS)})
    assert len(view) == 13
    assert list(view)[:3] == ["score[0]", "score[1]", "score[2]"] and list(view)[-1] == "plain"
    assert {k: s.type for k, s in view.items() if s.type is not T.SUCCESS} == {
        "score[2]": T.FAILED, "score[9]": T.TIMED_OUT, "score[11]": T.FAILED,
    }
    assert view["score[2]"].type is T.FAILED and view["score[6]"].type is T.SUCCESS
    assert view["plain"].type is T.SUCCESS
    with pytest.raises(KeyError):
        view["score[12]"]
    with pytest.raises(KeyError):
        view["other[0]"]
    t = view.tally()
    assert (t.total, t.successful, t.failed, t.skipped) == (13, 10, 3, 0)
    assert rf.triggers.failed_upstreams(view) == ["score[2]", "score[9]", "score[11]"]


@rf.task(retries=1)
def once_flaky(x: int, marks: str) -> int:
    """Item 1 fails on its first attempt only (a file marks that it ran); item 5 fails every time."""
    import pathlib

    mark = pathlib.Path(marks) / f"{x}"
    if x == 1 and not mark.exists():
        mark.write_text("ran")
        raise RuntimeError("one, the first time")
    if x == 5:
        raise RuntimeError("five")
    return x


def test_the_first_error_of_a_map_is_of_an_item_that_ended_failed(runner, tmp_path):
    """Item 1 failed and then succeeded on its retry: the map's note names item 5, which ended failed."""

    @rf.flow
    def mixed():
        return once_flaky.with_options(chunk_size=8).map(range(8), marks=rf.unmapped(str(tmp_path)))

    message = on(mixed, runner).run().task_states["once_flaky"].message
    assert "7 ok, 1 failed" in message and "first error: item 5: RuntimeError: five" in message, message
