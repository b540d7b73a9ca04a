"""Mapping semantics, on every runner: zip, unmapped, flatten, per-item states, reduce, retries, inputs."""

from __future__ import annotations

import pathlib
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import rayflow as rf
from rayflow.states import StateType as T


def on(flow, runner):
    return flow.with_options(runner=runner)


@rf.task
def double(x: int) -> int:
    return 2 * x


@rf.task
def add(x: int, y: int) -> int:
    return x + y


@rf.task
def total(xs: list) -> int:
    return sum(xs)


@rf.task
def numbers(n: int) -> list[int]:
    return list(range(n))


@rf.task
def pairs(x: int) -> list[int]:
    return [x, x * 10]


@rf.task
def picky(x: int) -> int:
    if x % 5 == 3:
        raise ValueError(f"no {x}")
    if x % 5 == 4:
        raise rf.Skip(f"skip {x}")
    return x


# -- shapes -------------------------------------------------------------------------


def test_zip_unmapped_and_reduce(runner):
    """
    numbers --> add.map(xs, y=unmapped(100)) --> double.map (element-wise) --> total
    """

    @rf.flow
    def zipped(n: int = 6):
        xs = numbers(n)
        shifted = add.map(xs, y=rf.unmapped(100))
        both = add.map(shifted, [1, 2, 3, 4, 5, 6])
        return {"doubled": double.map(both), "sum": total(double.map(both))}

    run = on(zipped, runner).run()
    expected = [2 * (x + 100 + y) for x, y in zip(range(6), range(1, 7))]
    assert run.result() == {"doubled": expected, "sum": sum(expected)}
    assert run.task_states["add"].type is T.MAPPED
    assert run.task_result("add") == [100, 101, 102, 103, 104, 105]
    assert [s.type for s in run.map_states("add-2")] == [T.SUCCESS] * 6


def test_flatten_of_a_map_and_of_a_list_of_lists(runner):
    @rf.task
    def nested() -> list[list[int]]:
        return [[1, 2], [], [3]]

    @rf.flow
    def flat():
        return {"of_map": double.map(rf.flatten(pairs.map([1, 2, 3]))), "of_node": double.map(rf.flatten(nested()))}

    assert on(flat, runner)() == {"of_map": [2, 20, 4, 40, 6, 60], "of_node": [2, 4, 6]}


def test_empty_input_gives_empty_result_and_success(runner):
    @rf.flow
    def empty():
        mapped = double.map([])
        return {"items": double.map(mapped), "sum": total(mapped)}

    run = on(empty, runner).run()
    assert run.state.type is T.SUCCESS
    assert run.result() == {"items": [], "sum": 0}
    assert run.map_states("double") == []


def test_str_arguments_are_not_mapped_unless_wrapped(runner):
    @rf.task
    def tag(x: int, label: str) -> str:
        return f"{label}{x}"

    @rf.task
    def shout(c: str) -> str:
        return c.upper()

    @rf.flow
    def strings(prefix: str = "n"):
        return {"tags": tag.map([1, 2], "#"), "param": tag.map([3], prefix), "chars": shout.map(rf.mapped("ab"))}

    assert on(strings, runner)() == {"tags": ["#1", "#2"], "param": ["n3"], "chars": ["A", "B"]}


def test_map_over_map_is_elementwise_with_per_item_failures(runner):
    """
    picky.map(range(10)) --> double.map : item i downstream consumes item i upstream
    """

    @rf.flow
    def chained():
        return double.map(picky.map(range(10)))

    run = on(chained, runner).run()
    up = run.map_states("picky")
    assert [s.type for s in up] == [T.SUCCESS, T.SUCCESS, T.SUCCESS, T.FAILED, T.SKIPPED] * 2
    assert up[3].error.type == "builtins.ValueError" and up[3].error.message == "no 3"
    down = run.map_states("double")
    assert [s.type for s in down] == [T.SUCCESS, T.SUCCESS, T.SUCCESS, T.TRIGGER_FAILED, T.SKIPPED] * 2
    assert run.task_result("double") == [0, 2, 4, None, None, 10, 12, 14, None, None]
    assert run.task_states["picky"].type is T.FAILED
    assert "2 failed" in run.task_states["picky"].message
    assert run.state.type is T.FAILED


def test_reduce_after_failed_items_by_trigger(runner):
    @rf.flow
    def reduced():
        items = picky.map(range(5))  # item 3 fails, item 4 is skipped
        return [total(items), total.with_options(name="tolerant", trigger=rf.triggers.all_finished)(items)]

    run = on(reduced, runner).run()
    assert run.task_states["total"].type is T.TRIGGER_FAILED
    assert "picky[" in run.task_states["total"].message
    assert run.task_result("tolerant") == 0 + 1 + 2  # only the successful values


def test_reduce_is_skipped_only_when_every_item_was(runner):
    @rf.task
    def skip_odd(x: int) -> int:
        if x % 2:
            raise rf.Skip("odd")
        return x

    @rf.flow
    def skipping():
        some = skip_odd.map(range(4))
        every = skip_odd.map([1, 3])
        return [total(some), total(every), total.with_options(name="keep", skip_on_upstream_skip=False)(every)]

    run = on(skipping, runner).run()
    assert run.task_states["skip_odd"].type is T.MAPPED
    assert run.task_result("total") == 2  # the skipped items are left out
    assert run.task_states["total-2"].type is T.SKIPPED
    assert run.task_result("keep") == 0


def test_min_success_ratio_lets_a_partly_failed_map_succeed(runner):
    @rf.flow
    def tolerant():
        return total(picky.with_options(min_success_ratio=0.7, name="lenient").map(range(10)))

    run = on(tolerant, runner).run()
    assert run.task_states["lenient"].type is T.MAPPED  # 8 of 10 ok (skips count as ok)
    assert run.result() == 0 + 1 + 2 + 5 + 6 + 7
    assert sum(s.is_failed() for s in run.map_states("lenient")) == 2
    strict = on(tolerant.with_options(name="strict"), runner)
    assert strict.run().state.type is T.SUCCESS
    picky_strict = picky.with_options(min_success_ratio=0.9, name="strict_map")

    @rf.flow
    def too_many():
        return total(picky_strict.map(range(10)))

    run = on(too_many, runner).run()
    assert run.task_states["strict_map"].type is T.FAILED
    assert run.task_states["total"].type is T.TRIGGER_FAILED


def test_per_item_retries_never_recompute_successful_items(runner, tmp_path):
    @rf.task(retries=2, chunk_size=3)
    def flaky_item(x: int, root: str) -> int:
        calls = pathlib.Path(root) / f"{x}.calls"
        n = int(calls.read_text()) + 1 if calls.exists() else 1
        calls.write_text(str(n))
        if x == 4 and n <= 2:
            raise OSError(f"item {x} attempt {n}")
        return x

    @rf.flow
    def retried():
        return flaky_item.map(range(6), rf.unmapped(str(tmp_path)))

    run = on(retried, runner).run()
    assert run.result() == list(range(6))
    states = run.map_states("flaky_item")
    assert states[4].type is T.SUCCESS and states[4].attempt == 3
    assert all(s.attempt == 1 for i, s in enumerate(states) if i != 4)
    calls = {int(p.stem): int(p.read_text()) for p in tmp_path.glob("*.calls")}
    assert calls == {0: 1, 1: 1, 2: 1, 3: 1, 4: 3, 5: 1}


def test_retry_signal_per_item(runner, tmp_path):
    @rf.task
    def eventually(x: int, root: str) -> int:
        marker = pathlib.Path(root) / f"{x}.seen"
        if x == 1 and not marker.exists():
            marker.touch()
            raise rf.Retry("again", delay=0.01)
        return x

    @rf.flow
    def again():
        return eventually.map([0, 1, 2], rf.unmapped(str(tmp_path)))

    run = on(again, runner).run()
    assert run.result() == [0, 1, 2]
    assert [s.attempt for s in run.map_states("eventually")] == [1, 2, 1]


# -- bad input -------------------------------------------------------------------------


def test_unequal_constant_lengths_are_a_mapping_error_at_build_time():
    @rf.flow
    def unequal():
        return add.map([1, 2, 3], [1, 2])

    with pytest.raises(rf.MappingError, match=r"x has 3, y has 2") as info:
        unequal.graph  # noqa: B018
    assert info.value.lengths == {"x": 3, "y": 2}


def test_unequal_parameter_lengths_fail_before_running(runner):
    @rf.flow
    def by_params(xs: list[int], ys: list[int]):
        return add.map(xs, ys)

    with pytest.raises(rf.MappingError, match="unequal lengths"):
        on(by_params, runner).run(xs=[1, 2], ys=[1])


def test_unequal_runtime_lengths_fail_the_map_naming_them(runner):
    @rf.flow
    def runtime(n: int = 3):
        return add.map(numbers(n), [1, 2])

    run = on(runtime, runner).run()
    assert run.task_states["add"].type is T.FAILED
    assert "unequal lengths" in run.task_states["add"].message


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("n", "m", "message"),
    [
        (5, 5, None),
        (1000, 1000, None),  # many chunks: the second generator keeps up with the first
        (5, 3, "y has 3, x has at least 5"),
        (3, 5, "x has 3, y has more than 3"),
        (1000, 700, "y has 700, x has at least"),
    ],
)
def test_two_generator_inputs_are_zipped_and_unequal_lengths_named(runner, n, m, message):
    """Both arguments are generators (streamed from the driver): the second, which does not
    lead, is asked for items as the first gives them, and one past the first's end."""

    @rf.flow
    def gens(n: int, m: int):
        return add.map((i for i in range(n)), (10 * i for i in range(m)))

    run = on(gens, runner).run(n=n, m=m)
    state = run.task_states["add"]
    if message is None:
        assert run.result() == [11 * i for i in range(n)]
    else:
        assert state.type is T.FAILED and "unequal lengths" in state.message and message in state.message, state.message


def test_an_item_whose_value_cannot_be_pickled_fails_alone(runner):
    import threading

    @rf.task
    def maybe_lock(i: int):
        return threading.Lock() if i == 1 else i

    @rf.flow
    def locks():
        return maybe_lock.map(range(3))

    state = on(locks, runner).run().task_states["maybe_lock"]
    assert state.type is T.FAILED
    assert state.message.startswith("3 items: 2 ok, 1 failed; first error: item 1: TypeError: its return value cannot be pickled")


def test_an_item_that_cannot_be_pickled_is_named_as_such():
    import threading

    @rf.flow(runner="local")
    def locks():
        return add.map([threading.Lock()], rf.unmapped(1))

    with pytest.raises(rf.SerializationError, match=r"an item of argument 'x' cannot be pickled.*_thread.lock"):
        locks.run()

    @rf.flow(runner="local")
    def matrix():
        return add.map(np.ones((2, 3)), rf.unmapped(1))

    with pytest.raises(rf.MappingError, match="1-dimensional"):
        matrix.run()


def test_non_iterable_arguments_are_named(runner):
    @rf.flow
    def scalar():
        return add.map([1, 2], 5)

    with pytest.raises(rf.MappingError, match=r"argument 'y' is a int.*rf.unmapped"):
        scalar.graph  # noqa: B018

    @rf.flow
    def scalar_param(w: float = 2.0):
        return add.map([1, 2], w)

    with pytest.raises(rf.MappingError, match="argument 'y' is a float"):
        on(scalar_param, runner).run()

    @rf.task
    def five() -> int:
        return 5

    @rf.flow
    def scalar_result():
        return double.map(five())

    run = on(scalar_result, runner).run()
    assert run.task_states["double"].type is T.FAILED
    assert "cannot be mapped over" in run.task_states["double"].message


def test_bad_map_options_are_named():
    with pytest.raises(rf.TaskOptionError, match="chunk_size"):
        double.with_options(chunk_size=0)
    with pytest.raises(rf.TaskOptionError, match="min_success_ratio"):
        double.with_options(min_success_ratio=1.5)
    with pytest.raises(rf.TaskOptionError, match="max_in_flight"):
        double.with_options(max_in_flight=-2)


# -- inputs -----------------------------------------------------------------------------


def test_numpy_pandas_pyarrow_and_generator_inputs(runner):
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})

    @rf.task
    def row_text(row: dict) -> str:
        return f"{row['b']}{row['a']}"

    @rf.flow
    def inputs():
        return {
            "numpy": double.map(np.arange(4)),
            "series": double.map(pd.Series([5, 6])),
            "frame": row_text.map(frame),
            "arrow": double.map(pa.array([7, 8])),
            "table": row_text.map(pa.Table.from_pandas(frame)),
            "generator": double.map(x for x in range(5)),
        }

    assert on(inputs, runner)() == {
        "numpy": [0, 2, 4, 6],
        "series": [10, 12],
        "frame": ["x1", "y2", "z3"],
        "arrow": [14, 16],
        "table": ["x1", "y2", "z3"],
        "generator": [0, 2, 4, 6, 8],
    }


def test_items_come_back_exactly_as_returned(runner):
    @rf.task
    def shaped(x: int):
        return [x, 1.0 * x, (x, "t"), {"k": x}, None, str(x), 2**70][x % 7]

    @rf.flow
    def shapes():
        return shaped.map(range(14))

    expected = [shaped.fn(x) for x in range(14)]
    assert on(shapes, runner)() == expected


def test_batch_tasks_get_whole_chunks(runner):
    @rf.task(batch=True, chunk_size=4)
    def affine(xs: pa.Array) -> pa.Array:
        assert isinstance(xs, pa.Array) and len(xs) <= 4
        return pc.add(pc.multiply(xs, 2), 1)

    @rf.task(batch=True)
    def widths(rows: pa.RecordBatch) -> list[int]:
        assert isinstance(rows, pa.RecordBatch)
        return [len(s) for s in rows.column("b").to_pylist()]

    @rf.flow
    def batched():
        return {"affine": affine.map(np.arange(10)), "widths": widths.map(pd.DataFrame({"b": ["a", "bb", "ccc"]}))}

    assert on(batched, runner)() == {"affine": [2 * x + 1 for x in range(10)], "widths": [1, 2, 3]}


def test_a_batch_task_downstream_of_maps_gets_one_arrow_array_of_the_successful_items(runner):
    """
    picky.map(range(10))  (item 3 fails)  --> batch_sum(xs: pa.Array)   (min_success_ratio lets it run)
    label.map(["a", ...])                 --> batch_join(xs: pa.Array)
    A plain batch=True task receives each mapped upstream as one column, no Python list in between.
    """

    @rf.task(chunk_size=4, min_success_ratio=0.5)
    def picky(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return 10 * x

    @rf.task
    def label(s: str) -> str:
        return s.upper()

    @rf.task(batch=True, trigger=rf.triggers.always_run)
    def batch_sum(xs: pa.Array, ys: pa.Array) -> dict:
        assert isinstance(xs, pa.Array) and isinstance(ys, pa.Array), (type(xs), type(ys))
        return {"sum": pc.sum(xs).as_py(), "n": len(xs), "ys": "".join(ys.to_pylist()), "type": str(ys.type)}

    @rf.flow
    def reduce_columns():
        return batch_sum(picky.map(range(10)), label.map(["a", "b", "c"]))

    out = on(reduce_columns, runner)()
    assert out == {"sum": 10 * (45 - 3), "n": 9, "ys": "ABC", "type": "string"}


def test_a_failing_batch_fails_its_items(runner):
    @rf.task(batch=True, chunk_size=2)
    def fragile(xs: pa.Array) -> pa.Array:
        if 3 in xs.to_pylist():
            raise ValueError("has a 3")
        return xs

    @rf.flow
    def batches():
        return fragile.map(range(6))

    run = on(batches, runner).run()
    assert [s.type for s in run.map_states("fragile")] == [T.SUCCESS] * 2 + [T.FAILED] * 2 + [T.SUCCESS] * 2


def test_a_batch_retry_signal_waits_its_delay(runner, tmp_path):
    """rf.Retry(delay=...) from a batch=True task delays every item of the batch, as for one item."""

    @rf.task(batch=True, chunk_size=3)
    def hesitant(xs: pa.Array, root: str) -> pa.Array:
        signalled, rerun = pathlib.Path(root) / "signalled", pathlib.Path(root) / "rerun"
        if not signalled.exists():
            signalled.write_text(repr(time.time()))
            raise rf.Retry("not ready", delay=1.0)
        rerun.write_text(repr(time.time()))
        return xs

    @rf.flow
    def hesitating():
        return hesitant.map(range(3), rf.unmapped(str(tmp_path)))

    run = on(hesitating, runner).run()
    assert run.result() == [0, 1, 2]
    assert [s.attempt for s in run.map_states("hesitant")] == [2, 2, 2]
    waited = float((tmp_path / "rerun").read_text()) - float((tmp_path / "signalled").read_text())
    assert waited >= 1.0 - 0.02, f"retried after {waited:.3f}s, not the 1s the signal asked for"


def test_map_outside_a_flow_is_a_plain_loop():
    assert add.map([1, 2], rf.unmapped(10)) == [11, 12]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.integers(-1000, 1000), max_size=40),
    chunk_size=st.integers(1, 9),
)
def test_results_do_not_depend_on_chunk_size(values, chunk_size):
    """A law, checked on the in-process runner: chunking is invisible in the results."""

    @rf.flow(runner="local")
    def law():
        sized = double.with_options(chunk_size=chunk_size)
        tolerant_total = total.with_options(trigger=rf.triggers.always_run)
        return [sized.map(values), tolerant_total(picky.with_options(chunk_size=chunk_size).map(values))]

    run = law.run()
    doubled, reduced = run.result()
    assert doubled == [2 * v for v in values]
    all_skipped = bool(values) and all(v % 5 == 4 for v in values)  # then the reduce is skipped too
    assert reduced == (None if all_skipped else sum(v for v in values if v % 5 not in (3, 4)))
    assert [s.type for s in run.map_states("picky")] == [
        T.FAILED if v % 5 == 3 else T.SKIPPED if v % 5 == 4 else T.SUCCESS for v in values
    ]


def test_progress_bar_when_asked_and_silent_otherwise(runner, capsys):
    @rf.flow
    def shown():
        return double.with_options(name="counted").map(range(50))

    on(shown, runner).run()
    assert "counted" not in capsys.readouterr().err  # not a terminal: no bar by default
    on(shown.with_options(progress=True), runner).run()
    err = capsys.readouterr().err
    assert "counted" in err and "50/50" in err and "0 failed" in err


_scalars = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(), st.text(max_size=5), st.binary(max_size=5)
)


@settings(max_examples=200, deadline=None)
@example(values=[0, 0.0])  # found by this law: two numpy halves of different dtypes were joined as floats
@given(values=st.one_of(st.lists(_scalars, max_size=30), st.lists(st.integers(), max_size=30), st.lists(st.floats(allow_nan=False), max_size=30)))
def test_columns_give_every_value_back_unchanged(values):
    """A law: whatever encoding a list of items gets (numpy, Arrow, pickles), items come back equal and of the same type."""
    from rayflow.engine.columns import concat_columns, encode_values

    column = encode_values(values)
    back = column.items()
    assert back == values and [type(v) for v in back] == [type(v) for v in values]
    assert [repr(v) for v in back] == [repr(v) for v in values]  # -0.0 stays -0.0, 1 does not become 1.0 or True
    half = len(values) // 2
    joined = concat_columns([encode_values(values[:half]), encode_values(values[half:])]).items()
    assert [repr(v) for v in joined] == [repr(v) for v in values]


@pytest.mark.parametrize("items", [range(0), range(5), range(10, -7, -3), range(2**62, 2**62 + 4), range(2**63, 2**63 + 2)])
def test_a_range_maps_to_the_same_items(items):
    from rayflow.engine.columns import to_column

    column = to_column(items)
    assert column.items() == list(items) and all(type(v) is int for v in column.items())
    assert column.slice(1, 3).items() == list(items)[1:3]


def test_a_first_run_whose_items_all_succeeded_travels_without_codes_and_attempts():
    """Pickled (as Ray stores a chunk's result), a clean first run leaves out 3 bytes per item,
    rebuilt when read; a run with a failure, a retry or a second attempt keeps them as they are."""
    import pickle

    from rayflow.engine.columns import ChunkResult, Column

    n = 10_000
    clean = ChunkResult(Column(np.arange(n), "numpy"), np.zeros(n, np.int8), np.ones(n, np.int16), partial=(7,))
    back = pickle.loads(pickle.dumps(clean, protocol=5))
    assert len(pickle.dumps(clean, protocol=5)) < 8 * n + 1000
    assert back.codes.dtype == np.int8 and not back.codes.any() and len(back) == n
    assert back.attempts.dtype == np.int16 and (back.attempts == 1).all() and back.partial == (7,)
    codes, attempts = np.zeros(3, np.int8), np.ones(3, np.int16)
    failed = ChunkResult(Column(np.arange(3), "numpy"), np.array([0, 1, 0], np.int8), attempts, errors={1: ("E", "m", "")})
    again = ChunkResult(Column(np.arange(3), "numpy"), codes, np.array([1, 2, 1], np.int16))
    retry = ChunkResult(Column(np.arange(3), "numpy"), codes, attempts, indices=np.array([0, 4, 5]))
    for kept in (failed, again, retry):
        copy = pickle.loads(pickle.dumps(kept, protocol=5))
        assert copy.codes.tolist() == kept.codes.tolist() and copy.attempts.tolist() == kept.attempts.tolist()
        assert copy.errors == kept.errors and (copy.indices is None) == (kept.indices is None)
