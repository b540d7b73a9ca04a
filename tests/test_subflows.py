"""Subflows: a flow called inside a flow body is inlined, on every runner.

    outer(n)
    ├── prep                      n + 1
    ├── inner (x=prep)            a subflow: inner/inc -> inner/inc-2
    ├── inner-2 (x=n * 10)        a second call, its own keys
    └── combine(inner, inner-2)
"""

from __future__ import annotations

import json
import pathlib

import pytest

import rayflow as rf
from rayflow.states import StateType as T


def on(flow, runner):
    return flow.with_options(runner=runner)


@rf.task
def inc(x: int) -> int:
    return x + 1


@rf.task
def combine(a: int, b: int) -> int:
    return a * 1000 + b


@rf.task
def boom(x: int) -> int:
    raise ValueError(f"boom {x}")


@rf.task
def listing(n: int) -> list[int]:
    return list(range(n))


@rf.flow
def inner(x: int) -> int:
    return inc(inc(x))


@rf.flow
def outer(n: int = 1) -> int:
    first = inner(x=inc.with_options(name="prep")(n))
    second = inner(x=n * 10)
    return combine(first, second)


def outer_calc(n: int = 1) -> int:
    return (n + 3) * 1000 + n * 10 + 2


def test_keys_are_namespaced_and_the_result_is_passed_on(runner):
    run = on(outer, runner).run(n=2)
    assert run.result() == outer_calc(2)
    assert list(run.task_states) == [
        "prep", "inner/inc", "inner/inc-2", "inner", "inner-2/inc", "inner-2/inc-2", "inner-2", "combine",
    ]
    assert all(s.type is T.SUCCESS for s in run.task_states.values())
    assert run.task_result("inner") == 5 and run.task_result("inner-2/inc") == 21


def test_the_inner_flow_still_runs_on_its_own(runner):
    assert on(inner, runner)(x=1) == 3
    assert on(inner, runner).run(x=1).task_states.keys() == {"inc", "inc-2"}


@rf.flow
def middle(x: int) -> list[int]:
    return listing(inner(x=x))


@rf.flow
def nested(n: int = 2) -> list[int]:
    r"""
    middle
    ├── middle/inner  (middle/inner/inc, middle/inner/inc-2)
    └── middle/listing
    inc.map(middle)          a map over a subflow's result
    """
    return inc.map(middle(x=n))


def test_nested_subflows_and_a_map_over_a_subflow_result(runner):
    run = on(nested, runner).run(n=1)
    assert run.result() == [1, 2, 3]
    assert list(run.task_states) == [
        "middle/inner/inc", "middle/inner/inc-2", "middle/inner", "middle/listing", "middle", "inc",
    ]


def test_a_subflow_result_in_wait_for(runner):
    @rf.flow
    def waits(n: int = 1):
        return inc(n, wait_for=[inner(x=n)])

    assert waits.graph_for(n=1).by_key["inc"].wait_for == ("inner",)
    run = on(waits, runner).run()
    assert run.result() == 2
    inner_done, inc_started = run.task_states["inner"].finished_at, run.task_states["inc"].started_at
    assert inner_done <= inc_started


def test_subflow_parameters_are_validated_while_the_parent_is_built():
    @rf.flow(runner="local")
    def bad(n: int = 1):
        return inner(x="not a number")

    with pytest.raises(rf.ParameterError, match=r"subflow 'inner' called in flow 'bad'.*x:") as info:
        bad.run()
    assert info.value.flow_name == "inner" and set(info.value.errors) == {"x"}

    @rf.flow(runner="local")
    def unknown(n: int = 1):
        return inner(x=1, y=2)

    with pytest.raises(rf.ParameterError, match="y: unknown parameter"):
        unknown.run()

    @rf.flow(runner="local")
    def missing(n: int = 1):
        return inner()

    with pytest.raises(rf.ParameterError, match="x: missing required parameter"):
        missing.run()


def test_a_failing_subflow_fails_its_downstream_and_the_parent(runner):
    @rf.flow
    def fragile(x: int) -> int:
        return inc(boom(x))

    @rf.flow
    def parent(n: int = 1):
        return combine(fragile(x=n), inc(n))

    run = on(parent, runner).run()
    states = run.task_states
    assert states["fragile/boom"].type is T.FAILED
    assert states["fragile/inc"].type is T.TRIGGER_FAILED
    assert states["fragile"].type is T.FAILED
    assert "fragile/inc" in states["fragile"].message  # decided by its reference (terminal) task
    assert states["combine"].type is T.TRIGGER_FAILED
    assert run.state.type is T.FAILED
    with pytest.raises(rf.FlowRunError):
        run.result()


def test_a_subflow_is_decided_by_its_own_reference_tasks(runner):
    @rf.flow
    def tolerant(x: int) -> int:
        kept = inc(x)
        boom(x)
        rf.set_reference_tasks(kept)
        return kept

    @rf.flow
    def parent(n: int = 1):
        return inc(tolerant(x=n))

    run = on(parent, runner).run()
    assert run.task_states["tolerant/boom"].type is T.FAILED
    assert run.task_states["tolerant"].type is T.SUCCESS
    assert run.result() == 3 and run.state.type is T.SUCCESS


def test_a_subflow_under_a_case_is_skipped_with_its_tasks(runner):
    @rf.flow
    def gated(n: int = 1):
        with rf.case(inc(n), 5):
            result = inner(x=n)
        return result

    run = on(gated, runner).run()
    assert run.task_states["inner"].type is T.SKIPPED
    assert run.task_states["inner/inc"].type is T.SKIPPED
    assert run.result() is None


def recorder(path: pathlib.Path):
    def handler(flow, old, new):
        with open(path, "a") as fh:
            fh.write(json.dumps([flow.name, old.type.value, new.type.value]) + "\n")

    return handler


def test_the_subflows_handlers_get_its_transitions(runner, tmp_path):
    log = tmp_path / "log.jsonl"
    watched = rf.flow(name="watched", on_state=[recorder(log)])(inner.fn)

    @rf.flow
    def parent(n: int = 1):
        return watched(x=n)

    assert on(parent, runner)() == 3
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert seen == [["watched", "PENDING", "RUNNING"], ["watched", "RUNNING", "SUCCESS"]]


def test_a_flow_calling_itself_is_a_graph_error():
    @rf.flow(runner="local")
    def forever(n: int = 1):
        return forever(n=n)

    with pytest.raises(rf.GraphError, match="calls itself"):
        forever.run()


def test_flow_run_inside_a_body_is_a_graph_error():
    @rf.flow(runner="local")
    def eager(n: int = 1):
        return inner.run(x=n)

    with pytest.raises(rf.GraphError, match=r"inner\(\.\.\.\) to inline it as a subflow"):
        eager.run()


def test_the_subflow_result_can_be_a_structure_of_refs_and_values(runner):
    @rf.flow
    def shaped(x: int):
        return {"a": inc(x), "b": [inc(x + 1), "const"], "x": x}

    @rf.flow
    def parent(n: int = 1):
        return shaped(x=n)

    assert on(parent, runner)() == {"a": 2, "b": [3, "const"], "x": 1}


def test_keys_stay_unique_when_a_task_is_named_like_a_generated_key(runner):
    @rf.flow
    def crowded(n: int = 1):
        return [inner(x=n), inner(x=n), inc.with_options(name="inner-2")(n), inc(n), inc(n), inc.with_options(name="inc-2")(n)]

    run = on(crowded, runner).run()
    keys = list(run.task_states)
    assert len(keys) == len(set(keys)) == 10  # two subflows of 3 nodes, and 4 tasks
    assert {"inner", "inner-2", "inner-2-2", "inc", "inc-2", "inc-2-2"} <= set(keys)
    assert run.result() == [3, 3, 2, 2, 2, 2]


def test_a_skipped_return_value_skips_what_consumes_the_subflow(runner):
    @rf.flow
    def maybe(x: int, mode: str):
        with rf.case(inc.with_options(name="pick")(x), 5):
            out = inc(x)
        return out

    @rf.flow
    def parent(n: int = 1):
        return inc.with_options(name="after")(maybe(x=n, mode="b"))

    run = on(parent, runner).run()
    assert run.task_states["maybe/inc"].type is T.SKIPPED
    assert run.task_states["maybe"].type is T.SKIPPED
    assert "skipped task maybe/inc" in run.task_states["maybe"].message
    assert run.task_states["after"].type is T.SKIPPED and run.state.type is T.SUCCESS


def test_a_subflow_cannot_take_a_parent_task_as_its_reference_task():
    @rf.flow(runner="local")
    def parent(n: int = 1):
        outside = inc(n)

        @rf.flow
        def sub(x: int):
            rf.set_reference_tasks(outside)
            return inc(x)

        return sub(x=n)

    with pytest.raises(rf.GraphError, match=r"inside subflow 'sub'.*\['inc'\] belong to the flow that calls it"):
        parent.run()


def test_a_copy_of_a_flow_calling_itself_is_caught_too():
    @rf.flow(runner="local")
    def loop(n: int = 1):
        return loop.with_options(name="again")(n=n)

    with pytest.raises(rf.GraphError, match="calls itself"):
        loop.run()


def test_a_subflow_settled_without_running_has_its_members_times(runner):
    @rf.flow
    def fragile(x: int) -> int:
        return boom(x)

    @rf.flow
    def parent(n: int = 1):
        return fragile(x=n)

    run = on(parent, runner).run()
    sub, member = run.task_states["fragile"], run.task_states["fragile/boom"]
    assert sub.type is T.FAILED
    assert sub.started_at == member.started_at and sub.finished_at == member.finished_at


def test_too_many_positional_subflow_arguments_name_the_subflow():
    @rf.flow(runner="local")
    def parent(n: int = 1):
        return inner(1, 2)

    with pytest.raises(rf.ParameterError, match="subflow 'inner' called in flow 'parent'.*positional"):
        parent.run()


def test_a_subflow_whose_body_raised_leaves_nothing_behind():
    @rf.flow
    def broken(x: int):
        inc(x)
        raise ValueError("no")

    @rf.flow(runner="local")
    def careful(n: int = 1):
        try:
            broken(x=n)
        except ValueError:
            pass
        return inc(n)

    assert list(careful.graph_for().by_key) == ["inc"]
    assert careful() == 2
