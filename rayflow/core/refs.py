"""Placeholders that stand for task results while a flow body is traced.

A flow body runs with the run's real parameter values, so Python over them
works as usual.  Calling a task inside it returns a ``NodeRef``: its value
does not exist until the run, so anything that would need one (``if``,
``for``, ``len``, arithmetic, comparisons) is a GraphError that says what to
do instead (``rf.case``/``rf.merge``, or a task), rather than a silently
wrong graph.

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
            f"used for {what}; to branch on it use `with rf.case({self._name()}, value):` and "
            "rf.merge(...), otherwise pass it to a task and do the work there "
            "(flow parameters are real values; task results are references)"
        )

    def _name(self) -> str:
        return "result"

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
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _arith
    __pow__ = __rpow__ = __neg__ = __pos__ = __abs__ = __invert__ = _arith
    __and__ = __rand__ = __or__ = __ror__ = __xor__ = __rxor__ = _arith
    __matmul__ = __rmatmul__ = __lshift__ = __rlshift__ = __rshift__ = __rrshift__ = _arith
    __divmod__ = __rdivmod__ = __round__ = __trunc__ = __floor__ = __ceil__ = _arith

    def __setitem__(self, key: Any, value: Any) -> None:
        raise self._misuse("item assignment")

    __delitem__ = __setitem__

    def _compare(self, *_: Any) -> Any:
        raise self._misuse("a comparison (<, <=, >, >=)")

    __lt__ = __le__ = __gt__ = __ge__ = _compare

    def __contains__(self, item: Any) -> bool:
        raise self._misuse("a membership test (in)")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # protocols probed with getattr/hasattr stay plain misses
            raise AttributeError(name)
        raise self._misuse(f"attribute access (.{name})")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._misuse("a call")


class NodeRef(_Placeholder):
    """The future value of a task call (or a subflow) inside a flow body.

    Its fields are private (``_key``, ``_owner``) so that ``result.key`` in a flow body,
    where a task returns an object with a ``key``, is the misuse error, not the node's key.
    Refs are neither compared nor hashed (``==``, ``in {...}`` raise too): rayflow
    deduplicates them by ``ref_id``.
    """

    __slots__ = ("_key", "_owner")

    def __init__(self, key: str, owner: int = 0):  # owner: the graph builder; refs never cross flows
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_owner", owner)

    def __setattr__(self, name: str, value: Any) -> None:
        raise self._misuse(f"attribute assignment (.{name} = ...)")

    def __reduce__(self) -> Any:
        return (NodeRef, (self._key, self._owner))

    def _describe(self) -> str:
        return f"the result of task '{self._key}'"

    def _name(self) -> str:
        return self._key.rsplit("/", 1)[-1].replace("-", "_")

    def __eq__(self, other: object) -> bool:
        raise self._misuse("a comparison (==, !=)")

    __ne__ = __eq__

    def __hash__(self) -> int:
        raise self._misuse("a dict key or set member")

    def __str__(self) -> str:
        raise self._misuse("str() or an f-string")

    def __format__(self, spec: str) -> str:
        raise self._misuse("str() or an f-string")

    def __repr__(self) -> str:
        return f"<NodeRef {self._key}>"


def ref_id(ref: Any) -> tuple:
    """What identifies a ref (NodeRef or MapInput) without comparing refs themselves."""
    if isinstance(ref, NodeRef):
        return ("node", ref._key, ref._owner)
    return ("input", ref.index)


@dataclass(frozen=True, slots=True)
class MapInput:
    """In a mapped task's arguments: the current item of mapped source ``index``."""

    index: int


_REFS = (NodeRef, MapInput)


def find_refs(value: Any) -> list[Any]:
    """Every NodeRef/MapInput inside ``value``, in first-seen order, without duplicates."""
    found: dict[tuple, Any] = {}
    _walk(value, found)
    return list(found.values())


def may_hold_refs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """False for the common call of plain scalars only, without walking it."""
    return any(type(a) not in _ATOMS for a in args) or any(type(v) not in _ATOMS for v in kwargs.values())


def unique_refs(refs: list[Any]) -> list[Any]:
    """``refs`` without duplicates, in first-seen order."""
    seen: dict[tuple, Any] = {}
    for ref in refs:
        seen.setdefault(ref_id(ref), ref)
    return list(seen.values())


_ATOMS = frozenset({int, float, str, bool, bytes, type(None)})  # tracing cost: skip the common case fast


def _walk(value: Any, found: dict[Any, None]) -> None:
    if type(value) in _ATOMS:
        return
    if isinstance(value, _REFS):
        found.setdefault(ref_id(value), value)
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
