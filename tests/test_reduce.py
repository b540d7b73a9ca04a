"""rf.reduce: built-in reduces of a map, folded into the map's chunks (core.reducers), on both runners."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import rayflow as rf
from rayflow.core.reducers import Partials
from rayflow.engine.columns import ChunkResult, Column
from rayflow.engine.plan import compile_plan
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
