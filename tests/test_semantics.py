"""The engine's semantics, run against every runner (in-process and Ray)."""

from __future__ import annotations

import pytest
from flows import Boom, add, diamond, diamond_calc, extract, failing, failing_branch, timed_sleep

import rayflow as rf
from rayflow.states import StateType


def on(flow, runner):
    return flow.with_options(runner=runner)


def test_diamond_matches_oracle(runner):
    run = on(diamond, runner).run(n=7)
    assert run.state.type is StateType.SUCCESS
    assert run.result() == diamond_calc(7)
    assert list(run.task_states) == ["extract", "clean", "audit", "load"]
    assert all(s.type is StateType.SUCCESS and s.attempt == 1 for s in run.task_states.values())
    assert run.task_result("extract") == list(range(7))


def test_call_returns_value_and_default_parameter(runner):
    assert on(diamond, runner)() == diamond_calc(10)


def test_repeated_task_keys_and_result_structures(runner):
    """
    add   add-2   add-3(add, add-2)
    """

    @rf.flow
    def shapes(a: int, b: int = 2):
        s1 = add(a, 1)
        s2 = add(b, 1)
        s3 = add(s1, y=s2)
        return {"pair": (s1, s2), "all": [s1, s2, s3], "const": "c", "param": a}

    run = on(shapes, runner).run(a=1)
    assert list(run.task_states) == ["add", "add-2", "add-3"]
    assert run.result() == {"pair": (2, 3), "all": [2, 3, 5], "const": "c", "param": 1}


def test_nested_containers_of_nodes_are_resolved_elementwise(runner):
    @rf.task
    def combine(parts: dict) -> int:
        return sum(parts["xs"]) + sum(v for v in parts["named"].values()) + sum(parts["pair"])

    @rf.flow
    def nested(n: int = 3):
        a, b = add(n, 1), add(n, 2)
        return combine({"xs": [a, b, 100], "named": {"a": a}, "pair": (b, 0)})

    assert on(nested, runner)() == (4 + 5 + 100) + 4 + 5


def test_flow_returning_none_and_params_only(runner):
    @rf.flow
    def side_effect(n: int = 1):
        add(n, 1)

    @rf.flow
    def passthrough(n: int = 5):
        return n

    run = on(side_effect, runner).run()
    assert run.state.is_successful() and run.result() is None
    assert on(passthrough, runner)(n=8) == 8


def test_failed_task_fails_flow_keeps_exception_and_stops_downstream(runner):
    run = on(failing, runner).run(x=1)
    assert run.state.type is StateType.FAILED
    states = run.task_states
    assert states["add"].type is StateType.SUCCESS
    failed = states["explode"]
    assert failed.type is StateType.FAILED
    assert failed.error.type == "flows.Boom"
    assert failed.error.message == "bad input 2"
    assert "raise Boom" in failed.error.traceback
    assert isinstance(failed.exception, Boom)
    downstream = states["add-2"]
    assert downstream.type is StateType.TRIGGER_FAILED
    assert "explode" in downstream.message
    with pytest.raises(rf.FlowRunError) as info:
        run.result()
    assert info.value.run is run
    assert isinstance(info.value.__cause__, Boom)
    assert "Boom: bad input 2" in str(info.value)
    with pytest.raises(rf.TaskRunError) as info:
        run.task_result("explode")
    assert isinstance(info.value.__cause__, Boom)


def test_calling_a_failing_flow_raises_flow_run_error(runner):
    with pytest.raises(rf.FlowRunError) as info:
        on(failing, runner)(x=3)
    assert info.value.run.state.is_failed()


def test_independent_branch_still_runs_after_a_failure(runner):
    run = on(failing_branch, runner).run(x=1)
    assert run.state.type is StateType.FAILED
    assert run.task_states["add-2"].type is StateType.SUCCESS
    assert run.task_result("add-2") == 3
    assert run.task_states["add"].type is StateType.TRIGGER_FAILED


def test_wait_for_orders_without_passing_values(runner):
    """
    sleep(first) ···> sleep-2(second)     (order only)
    """

    @rf.flow
    def ordered():
        first = timed_sleep(0.3, "first")
        second = timed_sleep(0.0, "second", wait_for=[first])
        return first, second

    first, second = on(ordered, runner)()
    assert second["start"] >= first["end"]


def test_wait_for_failure_blocks_the_waiting_task(runner):
    @rf.flow
    def blocked(x: int = 1):
        bad = extract.with_options(name="bad")("not a number")
        return add(x, 1, wait_for=bad)

    run = on(blocked, runner).run()
    assert run.task_states["bad"].type is StateType.FAILED
    assert run.task_states["add"].type is StateType.TRIGGER_FAILED


def test_history_records_each_transition(runner):
    run = on(diamond, runner).run(n=2)
    assert [s.type for s in run.history("load")] == [StateType.PENDING, StateType.RUNNING, StateType.SUCCESS]
    final = run.task_states["load"]
    assert final.started_at <= final.finished_at and final.duration >= 0


def test_unknown_task_key_is_a_clear_error(runner):
    run = on(diamond, runner).run(n=2)
    with pytest.raises(rf.UnknownTaskError, match="no task 'nope'"):
        run.task_result("nope")
    with pytest.raises(KeyError):
        run.history("nope")


def test_extract_is_still_a_plain_function():
    assert extract(3) == [0, 1, 2]
    assert extract.fn(2) == [0, 1]
