"""One retry ledger for a task and for an item of a map (issue 23).

The rule (engine/policy.py, ``after_retry_signal`` and ``next_retry``): a failure (an
exception, a timeout, ``rf.Fail``) spends one of ``retries``; an ``rf.Retry`` signal
spends nothing and is retried even past ``retries`` (as in Prefect 1).  An ``rf.Retry``
without ``delay`` waits the delay of the next retry of the budget, ``retry_delay(spent + 1)``,
the same wait a failure at that point would get.  Both runners, tasks and items alike.
"""

from __future__ import annotations

import pathlib

import rayflow as rf
from rayflow.engine import columns as C
from rayflow.engine.maps.feeds import WholeFeed
from rayflow.engine.maps.run import MapRun
from rayflow.engine.orchestrator import Orchestrator
from rayflow.engine.plan import compile_plan
from rayflow.states import StateType as T


def _script(root: str, key: str) -> str:
    """The next step of ``key``'s script (one line per attempt, kept in a file: on Ray each
    attempt may run in another process)."""
    path = pathlib.Path(root) / f"{key}.n"
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    steps = pathlib.Path(root, "script").read_text().split(",")
    return steps[min(n, len(steps)) - 1]


def _act(step: str, n: int) -> int:
    if step == "retry":
        raise rf.Retry("not ready")
    if step == "fail":
        raise ValueError("bad")
    return n


@rf.task(retries=1)
def plain(root: str) -> int:
    return _act(_script(root, "plain"), 7)


@rf.task(retries=1)
def item(x: int, root: str) -> int:
    return _act(_script(root, f"item{x}"), x) if x == 1 else x


def _run(runner, tmp_path, script: str):
    (tmp_path / "script").write_text(script)

    @rf.flow
    def ledger():
        return plain(str(tmp_path)), item.map([0, 1, 2], rf.unmapped(str(tmp_path)))

    return ledger.with_options(runner=runner).run()


def test_a_retry_signal_spends_no_retry_of_a_task_or_an_item(runner, tmp_path):
    """retries=1: rf.Retry, then a failure (the one budgeted retry), then success: attempt 3."""
    run = _run(runner, tmp_path, "retry,fail,ok")
    assert run.state.type is T.SUCCESS, run.state.message
    assert run.result() == (7, [0, 1, 2])
    task = run.task_states["plain"]
    assert (task.type, task.attempt) == (T.SUCCESS, 3)
    items = run.map_states("item")
    assert [(s.type, s.attempt) for s in items] == [(T.SUCCESS, 1), (T.SUCCESS, 3), (T.SUCCESS, 1)]


def test_failures_after_retry_signals_spend_the_same_budget_for_a_task_and_an_item(runner, tmp_path):
    """retries=1: rf.Retry twice (free), then two failures: the second fails for good, at attempt 4."""
    run = _run(runner, tmp_path, "retry,retry,fail,fail,ok")
    task = run.task_states["plain"]
    assert (task.type, task.attempt) == (T.FAILED, 4)
    items = run.map_states("item")
    assert (items[1].type, items[1].attempt) == (T.FAILED, 4)
    assert [s.type for s in run.history("plain")].count(T.RETRYING) == 3


# -- the default rf.Retry delay, numbered the same (pure: fake clock, no executor) -----------


def test_the_default_retry_signal_delay_is_the_next_budgeted_retrys():
    from rayflow.engine.policy import after_retry_signal, next_retry

    options = item.options.model_copy(update={"retries": 2, "retry_delay": (1.0, 7.0, 30.0)})
    assert after_retry_signal(options, 0) == 1.0 == next_retry(options, 0)
    assert after_retry_signal(options, 1) == 7.0 == next_retry(options, 1)
    assert after_retry_signal(options, 2) == 30.0  # past the budget: still retried, at the next delay
    assert after_retry_signal(options, 2, delay=0.5) == 0.5


@rf.task(retries=1, retry_delay=(1.0, 7.0))
def scripted(root: str) -> int:
    return _act(_script(root, "scripted"), 5)


def test_a_task_waits_the_same_default_delays_as_an_item(tmp_path):
    """rf.Retry, rf.Retry, a failure, rf.Retry: a task and an item wait 1, 1, 1, 7 seconds
    (the budget's first retry until the failure spends it, then its second)."""
    from test_engine import ScriptedExecutor
    from test_policy import FakeClock

    @rf.flow
    def one():
        return scripted(str(tmp_path))

    (tmp_path / "script").write_text("retry,retry,fail,retry,ok")
    plan = compile_plan(one.graph)
    ex, clock = ScriptedExecutor(plan), FakeClock()
    orch = Orchestrator(plan, ex, "delays", clock=clock)
    orch.start()
    orch.step(0)
    task_waits = []
    for _ in range(4):
        ex.finish("scripted")
        orch.step(0)
        state = orch.states["scripted"]
        assert state.type is T.RETRYING, state
        task_waits.append(state.scheduled_for - clock.now)
        clock.now = state.scheduled_for
        orch.step(0)
    ex.finish("scripted")
    orch.step(0)
    assert orch.states["scripted"].type is T.SUCCESS

    options = plan.by_key["scripted"].options
    run = MapRun("m", options.model_copy(update={"chunk_size": 4}), [WholeFeed("x", "column", None, 2)],
                 max_in_flight=8, cpus=1, clock=lambda: 0.0)
    from test_map_states import _summary

    (job, _), = run.next_jobs(0.0)
    item_waits, now = [], 0.0
    for attempt, step in enumerate(["retry", "retry", "fail", "retry"], start=1):
        if step == "retry":
            summary = _summary(0, 2 if attempt == 1 else 1, {C.SUCCESS: 1 if attempt == 1 else 0, C.RETRYING: 1}, retry=[(1, None, attempt)],
                               indices=None if attempt == 1 else (1,))
        else:
            summary = _summary(0, 1, {C.FAILED: 1}, failed=[(1, C.FAILED, True, attempt)], indices=(1,))
        run.on_summary(summary, f"h{attempt}", now)
        due, next_attempt = run.by_id[0].waiting[1][:2]
        assert next_attempt == attempt + 1
        item_waits.append(due - now)
        now = due
        (job, _), = run.next_jobs(now)
        assert job.indices == (1,) and job.attempts == (attempt + 1,)
    assert task_waits == item_waits == [1.0, 1.0, 1.0, 7.0]
