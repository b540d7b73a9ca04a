"""Flow bodies are Python over the run's real parameter values, on every runner.

Loops, branches, arithmetic, comprehensions and f-string names over
parameters shape the graph; each run's graph is still static and inspectable
before anything runs, and different values give different graphs.
"""

from __future__ import annotations

import pytest

import rayflow as rf
from rayflow.states import StateType as T


def on(flow, runner):
    return flow.with_options(runner=runner)


@rf.task
def fetch(region: str, day: int) -> list[int]:
    return [len(region) * day + i for i in range(3)]


@rf.task
def total(*parts: list[int]) -> int:
    return sum(sum(p) for p in parts)


@rf.task
def scale(x: int, factor: int) -> int:
    return x * factor


@rf.task
def same(value: object) -> object:
    return value


@rf.flow
def regional(regions: list[str], day: int = 1, mode: str = "full", n: int = 2) -> dict:
    r"""
    fetch_eu  fetch_us ...        one per region (a loop over a parameter)
         \    /
         total
    scale.map(range(n * 2))       only when mode == "full"
    """
    parts = [fetch.with_options(name=f"fetch_{r}")(r, day) for r in regions]
    out = {"total": total(*parts)}
    if mode == "full":
        out["scaled"] = scale.map(range(n * 2), factor=rf.unmapped(day + 1))
    return out


def regional_calc(regions: list[str], day: int = 1, mode: str = "full", n: int = 2) -> dict:
    out = {"total": sum(len(r) * day * 3 + 3 for r in regions)}
    if mode == "full":
        out["scaled"] = [x * (day + 1) for x in range(n * 2)]
    return out


def test_loops_branches_and_arithmetic_over_parameters(runner):
    for params in (
        {"regions": ["eu", "us", "apac"], "day": 2},
        {"regions": ["eu"], "day": 3, "mode": "lite"},
        {"regions": [], "n": 4},
    ):
        run = on(regional, runner).run(**params)
        assert run.state.type is T.SUCCESS, run.state
        assert run.result() == regional_calc(**params)
    assert list(run.task_states) == ["total", "scale"]  # no regions: no fetch tasks


def test_different_values_give_different_graphs():
    full = regional.graph_for(regions=["eu", "us"], day=1)
    lite = regional.graph_for(regions=["eu"], mode="lite")
    assert [n.key for n in full.nodes] == ["fetch_eu", "fetch_us", "total", "scale"]
    assert [n.key for n in lite.nodes] == ["fetch_eu", "total"]
    assert full.by_key["total"].upstream == ("fetch_eu", "fetch_us")
    assert full.by_key["scale"].sources[0].value == range(4)
    assert full.params["regions"] == ["eu", "us"] and lite.params["mode"] == "lite"


def test_parameters_are_coerced_before_the_body_sees_them():
    seen = []

    @rf.flow
    def typed(n: int, ratio: float = 1.0):
        seen.append((n, ratio))
        return [scale(i, 2) for i in range(n)]

    graph = typed.graph_for(n="3", ratio="2")
    assert seen == [(3, 2.0)] and len(graph.nodes) == 3


def test_graphs_are_cached_per_immutable_parameter_values():
    calls = []

    @rf.flow
    def counted(n: int, tags: tuple[str, ...] = ()):
        calls.append(n)
        return [scale(i, 2) for i in range(n)]

    first = counted.graph_for(n=2)
    assert counted.graph_for(n=2) is first and counted.graph_for(n="2") is first
    assert counted.graph_for(n=3) is not first
    assert counted.graph_for(n=2, tags=("a",)) is counted.graph_for(n=2, tags=["a"])
    assert calls == [2, 3, 2]


def test_mutable_parameter_values_are_traced_for_every_run():
    calls = []

    @rf.flow
    def listed(items: list[int]):
        calls.append(list(items))
        return [scale(i, 2) for i in items]

    listed.graph_for(items=[1])
    listed.graph_for(items=[1])
    assert calls == [[1], [1]]


def test_the_cache_is_bounded():
    from rayflow.core.flow import GRAPH_CACHE_SIZE

    @rf.flow
    def many(n: int):
        return scale(n, 1)

    first = many.graph_for(n=0)
    for n in range(1, GRAPH_CACHE_SIZE + 1):
        many.graph_for(n=n)
    assert len(many._graphs) == GRAPH_CACHE_SIZE
    assert many.graph_for(n=0) is not first  # the oldest entry was evicted


def test_a_graph_consuming_a_generator_is_traced_again(runner):
    @rf.flow
    def streamed(n: int):
        return scale.map((i for i in range(n)), factor=rf.unmapped(3))

    flow = on(streamed, runner)
    assert flow.run(n=3).result() == [0, 3, 6]
    assert flow.run(n=3).result() == [0, 3, 6]  # a cached graph would hold an exhausted generator


def test_a_required_parameter_is_needed_to_build_the_graph():
    with pytest.raises(rf.GraphError, match="needs a value for parameter.*regions"):
        regional.graph  # noqa: B018
    with pytest.raises(rf.ParameterError, match="day"):
        regional.graph_for(regions=["eu"], day="monday")


def test_branching_on_a_task_result_still_needs_case(runner):
    @rf.flow
    def wrong(n: int):
        if scale(n, 2) > 4:
            return scale(n, 3)
        return None

    with pytest.raises(rf.GraphError, match=r"comparison.*rf\.case\(scale, value\)"):
        on(wrong, runner).run(n=3)

    @rf.flow
    def right(n: int):
        doubled = scale(n, 2)
        with rf.case(doubled, 6):
            big = scale(n, 3)
        return rf.merge(big, scale(n, 0))

    assert on(right, runner).run(n=3).result() == 9
    assert on(right, runner).run(n=1).result() == 0


def test_values_that_are_equal_but_different_are_not_served_each_others_graph(runner):
    import datetime
    import decimal

    @rf.flow
    def echo(value: object):
        return same(value)

    flow = on(echo, runner)
    paris = datetime.datetime(2024, 1, 1, 13, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    utc = datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.timezone.utc)
    assert paris == utc
    for a, b in ((utc, paris), (decimal.Decimal("1.0"), decimal.Decimal("1.00")), (0.0, -0.0), (1, True)):
        assert repr(flow(value=a)) == repr(a) and repr(flow(value=b)) == repr(b)
    assert echo.graph_for(value=decimal.Decimal("sNaN")).params["value"].is_snan()  # unhashable: traced


def test_cache_graph_false_traces_every_run():
    calls = []

    @rf.flow(cache_graph=False)
    def clocked(n: int = 1):
        calls.append(n)
        return scale(n, 1)

    clocked.graph_for(n=1)
    clocked.graph_for(n=1)
    assert calls == [1, 1]


def test_drawn_ids_stay_distinct_and_labels_are_quoted():
    """`a/b` (task b of subflow a) and a task named `a_b` read alike as ids; a quote in a name."""
    from rayflow.cli.graph import dot, mermaid

    @rf.flow
    def a():
        return scale.with_options(name="b")(1, 2)

    @rf.flow
    def drawn():
        return [a(), scale.with_options(name="a_b")(1, 2), scale.with_options(name='say"hi"')(1, 2)]

    shape = drawn.graph.shape()
    assert [n["key"] for n in shape["nodes"]] == ["a/b", "a", "a_b", 'say"hi"']
    chart = mermaid(shape, {})
    assert 'n_a_b["b"]' in chart and 'n_a_b__2["a_b"]' in chart and '["say#quot;hi#quot;"]' in chart
    assert 'label="say\\"hi\\""' in dot(shape, {})
