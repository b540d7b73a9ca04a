"""Placeholders that stand for values while a flow body is traced.

Calling a task inside a flow returns a ``NodeRef``; the flow's parameters are
``ParamRef``s.  Neither has a value yet, so anything that would need one
(``if``, ``for``, ``len``, arithmetic) is a GraphError that says what to do
instead, rather than a silently wrong graph.

Arguments are stored as *templates*: the value the user passed, with the
refs left in place inside lists, tuples, dicts and sets, so they can be
resolved element-wise later.  ``substitute`` swaps refs for values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rayflow.exceptions import GraphError


class _Placeholder:
    __slots__ = ()

    def _describe(self) -> str:
        raise NotImplementedError

    def _misuse(self, what: str) -> GraphError:
        return GraphError(
            f"{self._describe()} has no value while the flow is being built, so it cannot be "
            f"used for {what}; pass it to a task and do the work there "
            "(the flow body only wires tasks together)"
        )

    def __bool__(self) -> bool:
        raise self._misuse("a truth test (if/and/or)")

    def __iter__(self):
        raise self._misuse("iteration")

    def __len__(self) -> int:
        raise self._misuse("len()")

    def __index__(self) -> int:
        raise self._misuse("an integer")

    def __int__(self) -> int:
        raise self._misuse("an integer")

    def __float__(self) -> float:
        raise self._misuse("a float")

    def __getitem__(self, item: Any) -> Any:
        raise self._misuse("indexing")

    def _arith(self, *_: Any) -> Any:
        raise self._misuse("arithmetic")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arith
    __truediv__ = __rtruediv__ = __floordiv__ = __mod__ = __pow__ = _arith


@dataclass(frozen=True, eq=True, slots=True)
class NodeRef(_Placeholder):
    """The future value of a task call inside a flow body."""

    key: str
    owner: int = 0  # id of the graph builder that made it; refs never cross flows

    def _describe(self) -> str:
        return f"the result of task '{self.key}'"

    def __repr__(self) -> str:
        return f"<NodeRef {self.key}>"


@dataclass(frozen=True, eq=True, slots=True)
class ParamRef(_Placeholder):
    """A flow parameter; replaced by its validated value when the plan is compiled."""

    name: str
    owner: int = 0

    def _describe(self) -> str:
        return f"flow parameter '{self.name}'"

    def __repr__(self) -> str:
        return f"<ParamRef {self.name}>"


@dataclass(frozen=True, slots=True)
class MapInput:
    """In a mapped task's arguments: the current item of mapped source ``index``."""

    index: int


_REFS = (NodeRef, ParamRef, MapInput)


def find_refs(value: Any) -> list[Any]:
    """Every NodeRef/ParamRef inside ``value``, in first-seen order, without duplicates."""
    found: dict[Any, None] = {}
    _walk(value, found)
    return list(found)


def _walk(value: Any, found: dict[Any, None]) -> None:
    if isinstance(value, _REFS):
        found[value] = None
    elif isinstance(value, dict):
        for k, v in value.items():
            _walk(k, found)
            _walk(v, found)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            _walk(v, found)


def substitute(value: Any, resolve: Callable[[Any], Any]) -> Any:
    """A copy of ``value`` with every ref replaced by ``resolve(ref)``.

    Containers without refs are returned as they are (no copy).
    """
    if isinstance(value, _REFS):
        return resolve(value)
    if isinstance(value, dict):
        if not find_refs(value):
            return value
        return type(value)((substitute(k, resolve), substitute(v, resolve)) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        if not find_refs(value):
            return value
        items = [substitute(v, resolve) for v in value]
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
            return type(value)(*items)
        return type(value)(items)
    return value
