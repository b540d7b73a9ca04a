"""``rf.reduce``: built-in reduces of a map that rayflow folds into the map's chunks.

``rf.reduce.sum(scores)`` is a task like any other (its trigger, retries, states and
history are a task's), whose value is the sum of the map's successful values.  Because its
function is known, each chunk of the map computes its part where its values already are
(the *partial*, ``ChunkResult.partial``, in the map's worker, with no user code), and the
reduce only combines the parts: it never makes a Python object per item, nor receives every
value.  A chunk without its part (a chunk whose items were retried, or an op that raised on
it) is reduced from its values in the reduce task, as unfolded.

- ``sum``: the sum (0 for none); floats are added per chunk first, so the last bits may
  differ from a left-to-right sum (as any parallel sum's);
- ``count``: how many items succeeded;
- ``min`` / ``max``: the smallest / largest (ValueError when no item succeeded, as Python's);
- ``concat``: the items' lists (or tuples) joined into one list, in item order.

Only a reduce whose one argument is the map itself is folded; given anything else (a task's
list, a list literal) it is a plain task over the list.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import Any

from rayflow.core.options import TaskOptions
from rayflow.core.task import Task


class Partials(list):
    """The parts of a folded reduce, one per chunk with items, in chunk order."""


def _sum(values: Sequence[Any]) -> Any:
    return builtins.sum(values)


def _count(values: Sequence[Any]) -> int:
    return builtins.sum(values) if isinstance(values, Partials) else len(values)


def _min(values: Sequence[Any]) -> Any:
    return builtins.min(values)


def _max(values: Sequence[Any]) -> Any:
    return builtins.max(values)


def _concat(values: Sequence[Any]) -> list:
    return [x for part in values for x in part]


# op name -> (the task's function, a chunk's part of its successful values)
OPS: dict[str, tuple[Callable[..., Any], Callable[[Sequence[Any]], Any]]] = {
    "sum": (_sum, _sum),
    "count": (_count, len),
    "min": (_min, _min),
    "max": (_max, _max),
    "concat": (_concat, _concat),
}
BY_FUNCTION = {fn: name for name, (fn, _) in OPS.items()}


def partial_of(op: str, values: Sequence[Any]) -> tuple[Any, ...] | None:
    """A chunk's part for reduce ``op`` from its successful values: (part,); () for a chunk
    with none (it adds nothing: a reduce of no items says so itself, as Python's min does);
    None when it cannot be made (the reduce task then reduces that chunk's values itself,
    and raises there what the part would have raised)."""
    if not len(values):
        return ()
    try:
        return (OPS[op][1](values),)
    except Exception:  # noqa: BLE001 - e.g. a sum of strings: the reduce task says so
        return None


sum = Task(_sum, TaskOptions(name="sum"))  # noqa: A001 - rf.reduce.sum
count = Task(_count, TaskOptions(name="count"))
min = Task(_min, TaskOptions(name="min"))  # noqa: A001
max = Task(_max, TaskOptions(name="max"))  # noqa: A001
concat = Task(_concat, TaskOptions(name="concat"))
