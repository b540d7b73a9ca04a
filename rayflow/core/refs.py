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


@dataclass(frozen=True, eq=False, slots=True)
class NodeRef(_Placeholder):
    """The future value of a task call (or a subflow) inside a flow body."""

    key: str
    owner: int = 0  # id of the graph builder that made it; refs never cross flows

    def _describe(self) -> str:
        return f"the result of task '{self.key}'"

    def _name(self) -> str:
        return self.key.rsplit("/", 1)[-1].replace("-", "_")

    def __eq__(self, other: object) -> bool:
        # `if x == "full":` must not silently be False: only refs compare (as dict keys).
        if isinstance(other, NodeRef):
            return self.key == other.key and self.owner == other.owner
        if isinstance(other, MapInput):
            return False
        raise self._misuse("a comparison (==, !=)")

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((self.key, self.owner))

    def __repr__(self) -> str:
        return f"<NodeRef {self.key}>"


@dataclass(frozen=True, slots=True)
class MapInput:
    """In a mapped task's arguments: the current item of mapped source ``index``."""

    index: int


_REFS = (NodeRef, MapInput)


def find_refs(value: Any) -> list[Any]:
    """Every NodeRef/MapInput inside ``value``, in first-seen order, without duplicates."""
    found: dict[Any, None] = {}
    _walk(value, found)
    return list(found)


_ATOMS = frozenset({int, float, str, bool, bytes, type(None)})  # tracing cost: skip the common case fast


def _walk(value: Any, found: dict[Any, None]) -> None:
    if type(value) in _ATOMS:
        return
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
