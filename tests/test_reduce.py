"""rf.reduce: built-in reduces of a map, folded into the map's chunks (core.reducers), on both runners."""

from __future__ import annotations

import pathlib

import numpy as np
import pyarrow as pa
import pytest

import rayflow as rf
from rayflow.core.reducers import Partials, partial_of
from rayflow.engine.driver.local_executor import LocalExecutor
from rayflow.engine.columns import ChunkResult, Column
from rayflow.engine.plan import compile_plan
from rayflow.engine.worker.chunk import _column_partial
from rayflow.engine.worker.execute import unpack
from rayflow.states import StateType as T


@rf.task(chunk_size=7)
def square(x: int) -> int:
    return x * x


@rf.task(chunk_size=4)
def repeat(x: int) -> list[str]:
    return [str(x)] * (x % 3)


@rf.task(chunk_size=5, retries=1)
def flaky(x: int, root: str) -> int:
    marker = pathlib.Path(root) / f"{x}.seen"
    if x % 6 == 1 and not marker.exists():
        marker.touch()
        raise OSError(f"once {x}")  # retried: its chunk has two results and no part of its own
    if x == 13:
        raise ValueError("thirteen")  # final: not in the reduce
    return x


@rf.flow
def reductions(n: int = 40):
    return {
        "sum": rf.reduce.sum(square.map(range(n))),
        "count": rf.reduce.count(square.map(range(n))),
        "min": rf.reduce.min(square.map(range(3, n))),
        "max": rf.reduce.max(square.map(range(n))),
        "concat": rf.reduce.concat(repeat.map(range(9))),
        "a list": rf.reduce.sum([1, 2, 3]),  # not a map: a plain task over the list
    }


def test_each_reduce_of_a_map_folds_into_its_chunks_and_equals_python(runner):
    plan = compile_plan(reductions.graph, reductions)
    assert {s.key: s.partials for s in plan.specs if s.partials} == {
        "sum": "sum", "count": "count", "min": "min", "max": "max", "concat": "concat"}
    run = reductions.with_options(runner=runner).run()
    squares = [x * x for x in range(40)]
    assert run.result() == {"sum": sum(squares), "count": 40, "min": 9, "max": max(squares),
                            "concat": [str(x) for x in range(9) for _ in range(x % 3)], "a list": 6}


def test_retried_and_failed_items_reduce_as_unfolded(runner, tmp_path):
    """A chunk whose items were retried has no part of its own: the reduce makes it from the
    chunk's merged values; a failed item is in no part (with a trigger that lets it run)."""

    @rf.flow
    def tolerant():
        values = flaky.map(range(20), rf.unmapped(str(tmp_path)))
        return rf.reduce.sum.with_options(trigger=rf.triggers.all_finished)(values)

    run = tolerant.with_options(runner=runner).run()
    assert run.task_states["sum"].type is T.SUCCESS
    assert run.task_result("sum") == sum(x for x in range(20) if x != 13)
    assert [s.attempt for s in run.map_states("flaky")][1] == 2


def test_a_reduce_that_cannot_be_made_fails_as_it_would_unfolded(runner):
    @rf.task
    def word(x: int) -> str:
        return str(x)

    @rf.flow
    def strings():
        return rf.reduce.sum(word.map(range(3)))

    @rf.flow
    def nothing():
        return rf.reduce.min(square.map([]))

    run = strings.with_options(runner=runner).run()
    assert run.task_states["sum"].type is T.FAILED and "TypeError" in run.task_states["sum"].message
    empty = nothing.with_options(runner=runner).run()
    assert empty.task_states["min"].type is T.FAILED and "ValueError" in empty.task_states["min"].message


def test_the_reduce_gets_one_part_per_chunk_not_every_value():
    """The layout of a folded reduce: each first run's part; a retried chunk's part made from its values."""

    def chunk(values, partial, codes=None, indices=None):
        codes = np.zeros(len(values), np.int8) if codes is None else np.array(codes, np.int8)
        return ChunkResult(Column(np.array(values), "numpy"), codes, np.ones(len(values), np.int16),
                           indices=None if indices is None else np.array(indices), partial=partial)

    first = chunk([1, 2, 3], (6,))
    retried = chunk([4, 5, 6], (10,), codes=[0, 1, 0])  # its base, then a retry of its item 1
    patch = chunk([50], None, indices=[1])
    empty = chunk([7], (), codes=[1])
    out = unpack((("map_partial:sum", ((0,), (1, 2), (3,))),), [first, retried, patch, empty])[0]
    assert isinstance(out, Partials) and out == [6, 4 + 50 + 6]
    assert rf.reduce.sum.fn(out) == 66 and rf.reduce.count.fn(Partials([3, 2])) == 5


@pytest.mark.parametrize("op, values, expected", [("sum", [1.5, 2.5], 4.0), ("count", ["a"], 1), ("concat", [[1], [2, 3]], [1, 2, 3])])
def test_outside_a_flow_a_reduce_is_its_plain_function(op, values, expected):
    assert getattr(rf.reduce, op)(values) == expected


@rf.task(batch=True, chunk_size=7)
def doubled(xs):
    import pyarrow.compute as pc

    return pc.multiply(xs, 2)


@rf.flow
def batch_reductions(n: int = 40):
    import pyarrow as pa

    xs = pa.array(list(range(n)))
    return {op: getattr(rf.reduce, op)(doubled.map(xs)) for op in ("sum", "count", "min", "max")}


def test_a_batch_map_s_reduces_fold_into_its_chunks_and_equal_python(runner):
    run = batch_reductions.with_options(runner=runner).run()
    values = [2 * x for x in range(40)]
    assert run.result() == {"sum": sum(values), "count": 40, "min": 0, "max": 78}
    assert all(type(v) is int for v in run.result().values())


@pytest.mark.parametrize(
    "op, column, ok, expected",
    [  # a batch chunk's part, in numpy: exactly partial_of's, or None where it could differ (partial_of then)
        ("sum", Column(np.arange(10), "numpy"), None, (45,)),
        ("sum", Column(pa.array([1, 2, 3]), "arrow"), [1, 0, 1], (4,)),
        ("sum", Column(np.array([2**62, 2**62]), "numpy"), None, None),  # int64 could overflow: Python's sum
        ("sum", Column(np.array([0.1, 0.2, 0.3]), "numpy"), None, None),  # floats: Python's order of adding
        ("min", Column(np.array([3.0, float("nan")]), "numpy"), None, None),  # Python's min depends on the order
        ("max", Column(pa.array([1.5, 2.5, -1.0]), "arrow"), None, (2.5,)),
        ("min", Column(np.array([5, -3, 7]), "numpy"), [1, 0, 1], (5,)),
        ("count", Column(pa.array(["a", "b", "c"]), "arrow"), [0, 1, 1], (2,)),
        ("count", Column(pa.array(["a"]), "arrow"), [0], ()),
        ("max", Column(np.array([], dtype=np.int64), "numpy"), None, ()),
        ("sum", Column(pa.array([1, None]), "arrow"), None, None),  # nulls: Python's way
        ("sum", Column(pa.array(["x", "y"]), "arrow"), None, None),
    ],
)
def test_a_batch_chunk_s_part_is_made_in_numpy_only_where_it_equals_python_s(op, column, ok, expected):
    ok = np.ones(len(column), bool) if ok is None else np.array(ok, bool)
    part = _column_partial(op, column, ok)
    assert part == expected and [type(p) for p in part or ()] == [type(p) for p in expected or ()]
    if part is not None:
        assert part == partial_of(op, [v for v, good in zip(column.items(), ok.tolist()) if good])


def test_a_reduce_whose_parts_all_came_back_is_combined_without_a_worker(monkeypatch, tmp_path):
    """Every chunk's report carried its part (a number): the orchestrator adds them up, and no
    worker runs the reduce; a part missing (a retried chunk) or not a number (concat): a worker does."""
    submitted: list[str] = []
    submit = LocalExecutor.submit
    monkeypatch.setattr(LocalExecutor, "submit", lambda self, spec, *a, **k: (submitted.append(spec.key), submit(self, spec, *a, **k))[1])

    @rf.flow
    def mixed():
        values = flaky.map(range(20), rf.unmapped(str(tmp_path)))
        return {
            "clean": rf.reduce.sum(square.map(range(30))),
            "retried": rf.reduce.sum.with_options(trigger=rf.triggers.all_finished)(values),
            "concat": rf.reduce.concat(repeat.map(range(9))),
        }

    plan = compile_plan(mixed.graph, mixed)
    assert {s.key: s.fold_here for s in plan.specs if s.partials} == {"sum": True, "sum-2": True, "concat": True}
    run = mixed.with_options(runner="local").run()
    assert run.result()["clean"] == sum(x * x for x in range(30))
    assert run.result()["retried"] == sum(x for x in range(20) if x != 13)
    assert run.task_states["sum"].type is T.SUCCESS and run.task_states["sum"].attempt == 1
    assert "sum" not in submitted and {"sum-2", "concat"} <= set(submitted)


def test_a_reduce_with_a_result_policy_is_never_combined_without_its_worker():
    @rf.flow
    def persisted():
        return rf.reduce.sum.with_options(persist=True)(square.map(range(3)))

    spec = compile_plan(persisted.graph, persisted).by_key["sum"]
    assert spec.partials == "sum" and not spec.fold_here
