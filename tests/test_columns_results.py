"""A chunk's results as a Column (engine.columns.encode_results): plain numbers pickled as one
list, every value given back as it was returned, also sliced, taken, as a batch and after
Ray's pickling; values that would be shared between items go the per-item way."""

from __future__ import annotations

import pickle

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rayflow.engine.columns import encode_results

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
