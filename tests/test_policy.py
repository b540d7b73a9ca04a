"""The orchestrator's rules as pure functions, and its retry timing under a fake clock (no executor work)."""

from __future__ import annotations

import pytest
from flows import add
from test_engine import ScriptedExecutor

import rayflow as rf
from rayflow.core.options import TaskOptions
from rayflow.engine.handlers import apply_handlers
from rayflow.engine.orchestrator import Orchestrator
from rayflow.engine.plan import compile_plan
from rayflow.engine.policy import FAIL, RETRY, SPLIT, after_worker_death, halves, retry_delay
from rayflow.states import State
from rayflow.states import StateType as T
from rayflow.triggers import (
    all_failed,
    all_finished,
    all_successful,
    any_failed,
    any_successful,
    not_all_skipped,
    some_failed,
    some_successful,
)

S, F, K = State(type=T.SUCCESS), State(type=T.FAILED), State(type=T.SKIPPED)


def ups(*states):
    return {f"u{i}": s for i, s in enumerate(states)}


@pytest.mark.parametrize(
    "trigger, passing, failing",
    [
        (all_successful, ups(S, K), ups(S, F)),
        (all_failed, ups(F, F), ups(F, S)),
        (any_successful, ups(F, K), ups(F, F)),
        (any_failed, ups(S, F), ups(S, K)),
        (all_finished, ups(F, F), None),
        (not_all_skipped, ups(K, F), ups(K, K)),
        (some_successful(at_least=2), ups(S, K, F), ups(S, F, F)),
        (some_successful(at_most=1), ups(S, F, F), ups(S, S, F)),
        (some_successful(at_least=0.5), ups(S, F), ups(S, F, F)),
        (some_failed(at_least=1, at_most=2), ups(F, F, S), ups(F, F, F)),
        (some_failed(at_most=0.34), ups(F, S, S), ups(F, F, S)),
    ],
)
def test_each_trigger_passes_and_fails(trigger, passing, failing):
    assert trigger(passing) is True
    if failing is not None:
        assert trigger(failing) is False


@pytest.mark.parametrize(
    "trigger",
    [all_successful, all_failed, any_successful, any_failed, all_finished, not_all_skipped, some_successful(at_least=3), some_failed(at_least=0.5)],
)
def test_every_trigger_passes_without_upstreams(trigger):
    assert trigger({}) is True


def test_counting_triggers_reject_bad_bounds():
    with pytest.raises(ValueError, match="at_least"):
        some_successful()
    with pytest.raises(ValueError, match=">= 0"):
        some_failed(at_least=-1)


def test_retry_delays_backoff_list_and_jitter():
    backoff = TaskOptions(retry_delay=2.0, retry_backoff=3.0)
    assert [retry_delay(backoff, n) for n in (1, 2, 3)] == [2.0, 6.0, 18.0]
    listed = TaskOptions(retry_delay=[1, 5])
    assert [retry_delay(listed, n) for n in (1, 2, 3)] == [1.0, 5.0, 5.0]
    jittered = TaskOptions(retry_delay=10.0, retry_jitter=0.1)
    assert retry_delay(jittered, 1, rng=lambda: 0.0) == 10.0
    assert retry_delay(jittered, 1, rng=lambda: 1.0) == pytest.approx(11.0)


@pytest.mark.parametrize(
    "items, deaths, system_retries, may_split, expected",
    [
        (64, 1, 3, True, SPLIT),  # several items share the blame: halves, no system retry spent
        (2, 9, 0, True, SPLIT),  # however often they died, and even with system_retries=0
        (1, 1, 3, True, RETRY),  # one item alone: within system_retries it runs again
        (1, 3, 3, True, RETRY),
        (1, 4, 3, True, FAIL),  # the 4th death of works holding it: 3 system retries spent
        (1, 7, 3, True, FAIL),  # isolated by 6 halvings: it died in 7 works already
        (1, 1, 0, True, FAIL),  # system_retries=0: its first death alone is final
        (8, 2, 3, False, RETRY),  # the map split all it may: the whole work, under system_retries
        (8, 4, 3, False, FAIL),
    ],
)
def test_after_a_worker_death_a_work_is_split_retried_or_failed(items, deaths, system_retries, may_split, expected):
    options = TaskOptions(system_retries=system_retries)
    assert after_worker_death(items=items, deaths=deaths, options=options, may_split=may_split) == expected


def test_halves_of_a_range_are_ranges_and_of_indices_tuples():
    assert halves(range(0, 64)) == (range(0, 32), range(32, 64))
    assert halves(range(7, 10)) == (range(7, 8), range(8, 10))  # the smaller half first
    assert halves((2, 5, 9)) == ((2,), (5, 9))
    low, high = halves(range(100, 165))
    assert len(low) + len(high) == 65 and low.stop == high.start


@pytest.mark.parametrize(
    "options, name",
    [
        ({"retry_delay": [-1]}, "retry_delay"),
        ({"retry_delay": []}, "retry_delay"),
        ({"retry_backoff": 0.5}, "retry_backoff"),
        ({"retry_on": ("not an exception",)}, "retry_on"),
        ({"trigger": "all_successful"}, "trigger"),
        ({"on_state": [42]}, "on_state"),
        ({"system_retries": -1}, "system_retries"),
    ],
)
def test_bad_failure_options_are_named(options, name):
    with pytest.raises(rf.TaskOptionError, match=name):
        rf.task(**options)(lambda: None)


def test_handlers_see_replacements_in_order_and_stop_at_an_error():
    calls = []

    def skip_it(task, old, new):
        calls.append(("skip_it", new.type))
        return State(type=T.SKIPPED, message="replaced")

    def look(task, old, new):
        calls.append(("look", new.type))

    def boom(task, old, new):
        raise KeyError("nope")

    out = apply_handlers([skip_it, look], None, State(type=T.RUNNING), State(type=T.FAILED))
    assert out.type is T.SKIPPED and calls == [("skip_it", T.FAILED), ("look", T.SKIPPED)]
    failed = apply_handlers([boom, look], None, State(type=T.RUNNING), State(type=T.SUCCESS))
    assert failed.type is T.FAILED and "state handler" in failed.message and "boom" in failed.message
    assert len(calls) == 2
    wrong = apply_handlers([lambda t, o, n: "text"], None, State(type=T.RUNNING), State(type=T.SUCCESS))
    assert wrong.type is T.FAILED and "not a State" in wrong.message


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_retry_waits_in_the_orchestrator_until_due():
    """
    add("x", 1) fails (TypeError); retries=1, retry_delay=5: no resubmission before t+5.
    """

    @rf.flow
    def once():
        return add.with_options(retries=1, retry_delay=5.0)("x", 1)

    plan = compile_plan(once.graph)
    ex, clock = ScriptedExecutor(plan), FakeClock()
    orch = Orchestrator(plan, ex, "r", clock=clock)
    orch.start()
    orch.step(0)
    ex.finish("add")
    orch.step(0)
    assert orch.states["add"].type is T.RETRYING
    assert orch.states["add"].scheduled_for == 1005.0
    assert orch._wait_time(10.0) == 5.0  # sleeps until due, never longer
    clock.now = 1004.9
    orch.step(0)
    assert ex.submitted == [("add", 1)]
    clock.now = 1005.0
    orch.step(0)
    assert ex.submitted == [("add", 1), ("add", 2)]
    assert orch.states["add"].type is T.RUNNING and orch.states["add"].attempt == 2


def test_timeout_deadline_counts_from_the_real_start():
    from rayflow.engine.executor import Started

    @rf.flow
    def slow():
        return add.with_options(timeout=2.0)(1, 1)

    plan = compile_plan(slow.graph)
    ex, clock = ScriptedExecutor(plan), FakeClock()
    orch = Orchestrator(plan, ex, "r", clock=clock)
    orch.start()
    orch.step(0)
    clock.now = 1010.0  # queued for 10 s: no deadline yet
    orch.step(0)
    assert orch.states["add"].type is T.RUNNING and not ex.cancelled
    orch.on_started(Started(ex.works["add"][0].work_id, 1010.0))
    clock.now = 1012.0
    orch.step(0)
    assert ex.cancelled == ["add"]
    assert orch.states["add"].type is T.TIMED_OUT
    ex.finish("add")  # the killed attempt's late result is ignored
    orch.step(0)
    assert orch.states["add"].type is T.TIMED_OUT and orch.done


def test_the_flow_and_a_lost_work_take_their_times_from_the_injected_clock():
    """add(1, 1): its work is lost at t=1003; the flow ends at the fake clock's time, not the wall's."""
    from rayflow.engine.executor import Completion
    from rayflow.states import ErrorInfo

    @rf.flow
    def lost():
        return add.with_options(system_retries=0)(1, 1)

    plan = compile_plan(lost.graph)
    ex, clock = ScriptedExecutor(plan), FakeClock()
    orch = Orchestrator(plan, ex, "r", clock=clock)
    orch.start()
    orch.step(0)
    clock.now = 1003.0
    error = ErrorInfo(type="ray.exceptions.WorkerCrashedError", message="worker died", system=True)
    orch.on_completion(Completion(ex.works["add"][0], None, None, error))
    assert orch.states["add"].type is T.FAILED and orch.states["add"].finished_at == 1003.0
    summary = orch.run()  # nothing left to run: it only settles the flow's state
    assert summary.state.type is T.FAILED
    assert summary.state.started_at == 1000.0 and summary.state.finished_at == 1003.0
