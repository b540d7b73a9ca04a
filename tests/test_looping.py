"""Looping tasks (``raise rf.Loop``): a task pages through a fake API served by a real HTTP server
on loopback until it is done, on both runners; ``max_loops`` hit and not hit; an item of a map
that loops; retries within a loop, for a task and for an item (resumed at the iteration that
failed or timed out, under every item strategy); a timeout per iteration; the LOOPED
transitions in the history (SQLite); a span per iteration; a bad ``max_loops`` at definition.

    pages ── LOOPED (page 1) ── LOOPED (page 2) ── ... ── SUCCESS (every page's items)
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
import urllib.parse
import urllib.request

import pytest

import rayflow as rf
from rayflow.states import StateType as T
from rayflow.store import RunStore
from rayflow.ui.svg_timeline import bars_of

PAGE_SIZE = 2


@pytest.fixture(scope="module")
def api():
    """``GET /items?page=N&pages=P``: items of page N (1-based) of a P-page listing, and the next page."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            page, pages = int(query["page"][0]), int(query["pages"][0])
            items = [f"item-{page}-{k}" for k in range(PAGE_SIZE)]
            body = json.dumps({"items": items, "next": page + 1 if page < pages else None}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def expected(pages: int) -> list[str]:
    return [f"item-{p}-{k}" for p in range(1, pages + 1) for k in range(PAGE_SIZE)]


@rf.task(max_loops=5)
def fetch_all(base: str, pages: int) -> list[str]:
    context = rf.context()
    page = (context.loop_result or {}).get("next", 1)
    with urllib.request.urlopen(f"{base}/items?page={page}&pages={pages}", timeout=10) as response:
        body = json.load(response)
    seen = (context.loop_result or {}).get("items", []) + body["items"]
    if body["next"] is not None:
        raise rf.Loop(result={"next": body["next"], "items": seen}, message=f"page {page} of {pages}")
    return seen


@rf.flow
def paging(base: str, pages: int = 3):
    return fetch_all(base, pages)


def test_a_task_pages_through_an_api_one_looped_state_per_page(runner, api):
    run = paging.with_options(runner=runner).run(base=api, pages=4)
    assert run.state.type is T.SUCCESS, run.state
    assert run.result() == expected(4)
    states = [(s.type, s.message, s.attempt) for s in run.history("fetch_all") if s.type is not T.PENDING]
    assert states == [(T.RUNNING, "", 1)] + [(T.LOOPED, f"page {p} of 4", 1) for p in (1, 2, 3)] + [(T.SUCCESS, "4 iterations", 1)]
    looped = [s for s in run.history("fetch_all") if s.type is T.LOOPED]
    assert all(a.finished_at <= b.started_at + 1e-6 for a, b in zip(looped, looped[1:]))  # in order, one after another
    # the history's transitions (what `rayflow show`, `logs` and the UI's timeline read)
    recorded = RunStore().run(run.run_id)
    assert [r["message"] for r in recorded["transitions"] if r["task_key"] == "fetch_all" and r["state"] == "LOOPED"] == [
        "page 1 of 4", "page 2 of 4", "page 3 of 4"]
    bars, _ = bars_of(recorded, [{"task": "fetch_all"}], time.time())  # the UI's timeline: a bar per iteration
    assert [b[3] for b in bars["fetch_all"]] == ["LOOPED", "LOOPED", "LOOPED", "SUCCESS"]
    assert all(a[1] <= b[0] + 1e-6 for a, b in zip(bars["fetch_all"], bars["fetch_all"][1:]))


def test_past_max_loops_the_task_fails_naming_the_limit(runner, api):
    run = paging.with_options(runner=runner).run(base=api, pages=7)  # max_loops=5: page 5 would loop again
    state = run.task_states["fetch_all"]
    assert state.type is T.FAILED
    assert "max_loops=5" in state.message and "iteration 5" in state.message
    assert [s.type for s in run.history("fetch_all")].count(T.LOOPED) == 4


@rf.task
def flaky_pages(marks: str) -> list[tuple[int, object]]:
    """Loops to iteration 4; iterations 2 and 3 each fail on their first run (a mark file each)."""
    context = rf.context()
    seen = (context.loop_result or []) + [(context.loop_count, context.loop_result and context.loop_result[-1][0])]
    mark = os.path.join(marks, str(context.loop_count))
    if context.loop_count in (2, 3) and not os.path.exists(mark):
        open(mark, "w").close()
        raise ConnectionError(f"iteration {context.loop_count} failed")
    if context.loop_count < 4:
        raise rf.Loop(result=seen)
    return seen


@pytest.mark.parametrize("retries", [2, 1])
def test_retries_apply_per_iteration_and_resume_the_loop_where_it_failed(runner, tmp_path, retries):
    @rf.flow
    def retried(marks: str):
        return flaky_pages.with_options(retries=retries)(marks)

    run = retried.with_options(runner=runner).run(marks=str(tmp_path))
    states = [(s.type, s.attempt) for s in run.history("flaky_pages") if s.type not in (T.PENDING, T.RUNNING)]
    head = [(T.LOOPED, 1), (T.RETRYING, 1), (T.LOOPED, 2), (T.RETRYING if retries == 2 else T.FAILED, 2)]
    if retries == 2:  # each retry resumed with the same loop_count and loop_result: every iteration ran to its end once
        assert run.state.type is T.SUCCESS, run.state
        assert run.result() == [(1, None), (2, 1), (3, 2), (4, 3)]
        assert states == head + [(T.LOOPED, 3), (T.SUCCESS, 3)]
    else:  # the retry budget is the task's, across its iterations: a Loop gives none of it back
        assert states == head
        assert "iteration 3 failed" in run.task_states["flaky_pages"].message


@rf.task(max_loops=4)
def countdown(n: int) -> tuple[int | None, int, object]:
    """Item n loops n-1 times, summing its loop counts in loop_result; n=9 passes max_loops."""
    context = rf.context()
    if context.loop_count < n:
        raise rf.Loop(result=(context.loop_result or 0) + context.loop_count, message=f"{n}: not yet")
    return context.map_index, context.loop_count, context.loop_result


def test_an_item_of_a_map_loops_within_its_chunk_with_its_own_loop_count(runner):
    @rf.flow
    def counting():
        return countdown.map([1, 3, 2, 9, 4])

    run = counting.with_options(runner=runner).run()
    assert run.task_states["countdown"].type is T.FAILED  # item 3 (n=9) passed max_loops
    values = run.task_result("countdown") if run.state.is_successful() else None
    assert values is None
    items = run.map_states("countdown")
    assert [s.type for s in items] == [T.SUCCESS, T.SUCCESS, T.SUCCESS, T.FAILED, T.SUCCESS]
    assert "max_loops=4" in items[3].message
    logs = RunStore().logs(run.run_id, task="countdown")
    looped = sorted((r["map_index"], r["message"]) for r in logs if r["message"].startswith("LOOPED"))
    assert looped == sorted(
        [(1, "LOOPED (iteration 1): 3: not yet"), (1, "LOOPED (iteration 2): 3: not yet"), (2, "LOOPED (iteration 1): 2: not yet")]
        + [(3, f"LOOPED (iteration {k}): 9: not yet") for k in (1, 2, 3)]
        + [(4, f"LOOPED (iteration {k}): 4: not yet") for k in (1, 2, 3)]
    )


@pytest.mark.parametrize("options", [{}, {"timeout": 30}, {"concurrency": 2}], ids=["dense", "timed", "threaded"])
def test_items_loop_under_every_item_strategy(options):
    """The chunk's strategies (engine.worker.item_runners) each run an item's loop, with its own count."""

    @rf.flow
    def counting():
        return countdown.with_options(**options).map([1, 3, 2, 4])

    run = counting.with_options(runner="local").run()
    assert run.state.type is T.SUCCESS, run.state
    assert run.result() == [(0, 1, None), (1, 3, 3), (2, 2, 1), (3, 4, 6)]


@rf.task(max_loops=3)
async def async_countdown(n: int) -> tuple[int, object]:
    context = rf.context()
    if context.loop_count < n:
        raise rf.Loop(result=(context.loop_result or 0) + 10)
    return context.loop_count, context.loop_result


def test_async_tasks_and_async_items_loop():
    @rf.flow
    def counting():
        return async_countdown(3), async_countdown.map([2, 1, 3])

    run = counting.with_options(runner="local").run()
    assert run.state.type is T.SUCCESS, run.state
    assert run.result() == ((3, 20), [(2, 10), (1, None), (3, 20)])


def test_a_batch_task_cannot_loop_and_says_so():
    @rf.task(batch=True)
    def whole(xs):
        raise rf.Loop(message="again")

    @rf.flow
    def batched():
        return whole.map([1, 2])

    run = batched.with_options(runner="local").run()
    items = run.map_states("whole")
    assert all(s.type is T.FAILED and "cannot loop a batch=True task" in s.message for s in items)


def test_context_outside_a_task_and_on_a_first_run():
    assert rf.context() == rf.context().__class__(None, None, None, 1, None)

    @rf.task
    def where() -> tuple:
        c = rf.context()
        return c.run_id, c.task_key, c.map_index, c.loop_count, c.loop_result

    @rf.flow
    def plain():
        return where()

    run = plain.with_options(runner="local").run()
    assert run.result() == (run.run_id, "where", None, 1, None)


@pytest.mark.parametrize("bad", [0, -3, "many", 2.5, True, None])
def test_a_bad_max_loops_is_one_clear_error_at_definition(bad):
    with pytest.raises(rf.TaskOptionError, match="max_loops") as info:

        @rf.task(max_loops=bad)
        def looping() -> None: ...

    assert str(info.value).count("\n") == 0


def test_run_timed_and_run_items_loop_an_item_to_its_value():
    """The strategies the runners above do not reach here: SIGALRM on the main thread, and a
    selection of items (a retry, or some gated)."""
    from rayflow.engine.worker.item_runners import ItemCalls, run_items, run_timed
    from rayflow.engine.worker.items import Outcomes

    def call(n: int) -> int:
        context = rf.context()
        if context.loop_count < n:
            raise rf.Loop(result=(context.loop_result or 0) + 1)
        return context.loop_result

    for strategy, timeout in ((run_timed, 5.0), (run_items, None)):
        outcomes = Outcomes(4, (Exception,))
        calls = ItemCalls(call, [3, 1, 9], [0, 2, 3], 4, outcomes, timeout, max_loops=5)
        assert strategy(calls) == [2, None, None, None], strategy
        assert outcomes.codes.tolist() == [0, 0, 0, outcomes.codes[3]] and outcomes.codes[3] != 0
        assert "max_loops=5" in outcomes.errors[3][1] and outcomes.retryable[3] is False


def test_every_strategy_resumes_items_and_keeps_where_only_looped_items_stopped():
    """A retry's ``resume`` starts an item at its iteration; an item that fails after looping
    leaves where it stopped in ``outcomes.loops``; one that never looped leaves nothing."""
    import cloudpickle

    from rayflow.engine.worker import item_runners as R
    from rayflow.engine.worker.items import Outcomes

    def call(n: int) -> object:
        context = rf.context()
        if n < 0 and context.loop_count == -n:
            raise ValueError(f"stopped at {context.loop_count}")
        if context.loop_count < abs(n):
            raise rf.Loop(result=(context.loop_result or 0) + context.loop_count)
        return context.loop_count, context.loop_result

    async def call_async(n: int) -> object:
        return call(n)

    # item 0 resumes at iteration 3 (loop_result 30); item 1 fails at iteration 2; item 2 fails at once
    resume = {0: cloudpickle.dumps((3, 30))}
    strategies = [(R.run_items, None, None), (R.run_timed, 5.0, None), (R.run_threaded, 5.0, 2), (R.run_async, 5.0, 2)]
    for strategy, timeout, at_once in strategies + [(R.run_abandoning, 5.0, None)]:
        outcomes = Outcomes(3, (Exception,))
        fn = call_async if strategy is R.run_async else call
        calls = R.ItemCalls(fn, [4, -2, -1], range(3), 3, outcomes, timeout, at_once=at_once, is_async=fn is call_async, resume=resume)
        assert strategy(calls)[0] == (4, 33), strategy
        assert outcomes.codes.tolist()[1:] == [outcomes.codes[1]] * 2 and outcomes.codes[1] != 0
        assert set(outcomes.loops) == {1} and cloudpickle.loads(outcomes.loops[1]) == (2, 1), strategy
    assert R.pick(R.ItemCalls(call, [1], range(1), 1, Outcomes(1, (Exception,)), resume=resume)) is R.run_items
    outcomes = Outcomes(3, (Exception,))  # every item of a first run: the dense strategy, no resume
    assert R.run_dense(R.ItemCalls(call, [4, -2, -1], range(3), 3, outcomes)) == [(4, 6), None, None]
    assert set(outcomes.loops) == {1} and cloudpickle.loads(outcomes.loops[1]) == (2, 1)


def test_one_span_per_iteration_and_a_retry_resumes_the_count(monkeypatch, tmp_path):
    from otlp_sink import HttpSink

    sink = HttpSink()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
    try:
        @rf.flow
        def retried(marks: str):
            return flaky_pages.with_options(retries=2)(marks)

        run = retried.with_options(runner="local").run(marks=str(tmp_path))
        assert run.state.type is T.SUCCESS, run.state
        spans = sink.wait_for(lambda spans: len([s for s in spans if s["trace_id"] == run.trace_id]) >= 7)
    finally:
        sink.close()
    tasks = sorted((s for s in spans if s["name"] == "task flaky_pages" and s["trace_id"] == run.trace_id), key=lambda s: s["start"])
    assert [(s["attributes"]["rayflow.loop_count"], s["attributes"]["rayflow.attempt"], s["attributes"]["rayflow.state"]) for s in tasks] == [
        (1, 1, "LOOPED"), (2, 1, "RETRYING"), (2, 2, "LOOPED"), (3, 2, "RETRYING"), (3, 3, "LOOPED"), (4, 3, "SUCCESS")]
    assert [name for name, _ in tasks[0]["events"]] == ["loop"]
    assert all(a["end"] <= b["start"] for a, b in zip(tasks, tasks[1:]))


@rf.task(timeout=0.4)
def slow_pages(pages: int, stuck: int = 0) -> int:
    """Each iteration takes 0.15 s (all of them together more than the timeout); iteration ``stuck`` hangs."""
    context = rf.context()
    time.sleep(3 if context.loop_count == stuck else 0.15)
    if context.loop_count < pages:
        raise rf.Loop(result=context.loop_count)
    return context.loop_count


def test_the_timeout_bounds_each_iteration_of_a_plain_task(runner):
    @rf.flow
    def timed(stuck: int = 0):
        return slow_pages(4, stuck)

    run = timed.with_options(runner=runner).run()
    assert run.state.type is T.SUCCESS, run.state
    assert run.result() == 4  # 0.6 s in all: each iteration's deadline counts from its own start
    if runner == "local":  # a stuck iteration still times out (the in-process runner abandons it)
        run = timed.with_options(runner=runner).run(stuck=2)
        assert run.task_states["slow_pages"].type is T.TIMED_OUT
        assert run.task_states["slow_pages"].message == "timed out after 0.4s"


# -- an item of a map that stops mid-loop is retried where it stopped --------------------------


def _iteration(n: int, marks: str) -> tuple[int, list[int]]:
    """Item n loops to iteration n (max_loops=5: n=9 passes it); its iteration 3 fails on its first
    run; each iteration writes its (loop_count, loop_result) to the item's log."""
    context = rf.context()
    done = context.loop_result or []
    with open(os.path.join(marks, f"{n}.log"), "a") as log:
        log.write(f"{context.loop_count} {done}\n")
    mark = os.path.join(marks, f"{n}.failed")
    if context.loop_count == 3 and not os.path.exists(mark):
        open(mark, "w").close()
        raise ConnectionError(f"item {n}: iteration 3 failed")
    if context.loop_count < n:
        raise rf.Loop(result=done + [context.loop_count])
    return context.loop_count, done


@rf.task(max_loops=5, retries=1)
def resumable(n: int, marks: str) -> tuple[int, list[int]]:
    return _iteration(n, marks)


@rf.task(max_loops=5, retries=1)
async def resumable_async(n: int, marks: str) -> tuple[int, list[int]]:
    return _iteration(n, marks)


def _log(marks, n: int) -> list[str]:
    with open(os.path.join(marks, f"{n}.log")) as log:
        return log.read().splitlines()


def _check_resumed(run, key: str, marks) -> None:
    items = run.map_states(key)
    assert [s.type for s in items] == [T.SUCCESS, T.SUCCESS, T.FAILED], [(s.type, s.message) for s in items]
    # the retry ran iteration 3 again with loop_count 3 and iteration 2's loop_result; 1 and 2 did not run again
    assert _log(marks, 4) == ["1 []", "2 [1]", "3 [1, 2]", "3 [1, 2]", "4 [1, 2, 3]"]
    assert _log(marks, 1) == ["1 []"]
    # max_loops counts the item's iterations across its retries: the retry's third is iteration 5, the last
    assert _log(marks, 9) == ["1 []", "2 [1]", "3 [1, 2]", "3 [1, 2]", "4 [1, 2, 3]", "5 [1, 2, 3, 4]"]
    assert "LoopLimitExceeded" in items[2].message and "iteration 5" in items[2].message and "max_loops=5" in items[2].message


def test_an_item_that_fails_mid_loop_is_retried_at_that_iteration(runner, tmp_path):
    @rf.flow
    def resuming(marks: str):
        return resumable.map([4, 1, 9], marks=marks)

    run = resuming.with_options(runner=runner).run(marks=str(tmp_path))
    _check_resumed(run, "resumable", tmp_path)
    assert run.task_result("resumable")[:2] == [(4, [1, 2, 3]), (1, [])]


@pytest.mark.parametrize("options", [{"timeout": 30}, {"concurrency": 2}, "async"], ids=["timed", "threaded", "async"])
def test_every_item_strategy_resumes_an_item_where_it_stopped(tmp_path, options):
    task = resumable_async if options == "async" else resumable.with_options(**options)

    @rf.flow
    def resuming(marks: str):
        return task.map([4, 1, 9], marks=marks)

    run = resuming.with_options(runner="local").run(marks=str(tmp_path))
    _check_resumed(run, "resumable_async" if options == "async" else "resumable", tmp_path)
