"""A chunk's results as a Column (engine.columns.encode_results): plain numbers pickled as one
list, every value given back as it was returned, also sliced, taken, as a batch and after
Ray's pickling; values that would be shared between items go the per-item way."""

from __future__ import annotations

import pickle

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rayflow.engine.columns import encode_results, to_column

_scalars = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(), st.text(max_size=5), st.binary(max_size=5)
)


@settings(max_examples=100, deadline=None)
@example(values=[1, "a", 2])  # ints around a string: the pickler's memo sends them to encode_values
@example(values=[None, 2**70, -0.0, True])
@given(values=st.one_of(st.lists(_scalars, max_size=30), st.lists(st.integers(), max_size=30), st.lists(st.floats(allow_nan=False), max_size=30)))
def test_chunk_results_give_every_value_back_unchanged(values):
    """A law: equal, of the same type (1 never 1.0 or True, -0.0 stays -0.0), whatever the encoding."""
    column = pickle.loads(pickle.dumps(encode_results(values), protocol=5))
    assert len(column) == len(values)
    for back, expected in ((column.items(), values), (column.slice(1, 4).items(), values[1:4]),
                           (column.take(np.arange(len(values))[::-1]).items(), values[::-1])):
        assert [repr(v) for v in back] == [repr(v) for v in expected] and [type(v) for v in back] == [type(v) for v in expected]
    if values and all(type(v) is int and abs(v) < 2**63 for v in values):
        assert column.kind == "pylist" and column.batch().to_pylist() == values


def test_chunk_results_that_share_an_object_come_back_apart():
    """Items returning one mutable object come back as one copy each, as per-item pickles give
    them: a list pickled whole would share it between them."""
    shared = {"k": [1]}
    back = encode_results([1, shared, shared, 2]).items()
    assert back == [1, shared, shared, 2] and back[1] is not back[2]
    assert encode_results([1, 2.5, None, True]).kind == "pylist"


def test_a_list_input_of_numbers_is_pickled_in_blocks_and_sliced_by_view():
    """A long list input (engine.pickled_lists): any slice, of a slice too, gives its items back
    (across block edges), also after Ray's pickling; other inputs keep their encodings."""
    from rayflow.engine.pickled_lists import BLOCK

    values = [i if i % 3 else float(i) for i in range(2 * BLOCK + 5)]
    values[7], values[-1] = None, True
    column = pickle.loads(pickle.dumps(to_column(values), protocol=5))
    assert column.kind == "pylist" and len(column) == len(values) and column.items() == values
    for lo, hi in ((0, 64), (BLOCK - 1, BLOCK + 2), (5, 2 * BLOCK + 5), (2 * BLOCK, 2 * BLOCK + 5), (9, 9)):
        part = column.slice(lo, hi)
        assert len(part) == hi - lo and [repr(v) for v in part.items()] == [repr(v) for v in values[lo:hi]]
        assert part.slice(1, 3).items() == values[lo:hi][1:3]
    assert to_column(["a", 1]).kind == "arrow" or to_column(["a", 1]).kind == "pickled"
    assert to_column([1, "a", 2]).kind == "pickled" and to_column([1, "a", 2]).items() == [1, "a", 2]
