"""Declaring maps in a flow body: ``t.map(xs, y=rf.unmapped(c))``, ``rf.flatten(node)``.

Every argument of ``.map`` not wrapped in ``rf.unmapped`` is mapped over,
and several mapped arguments are zipped.  A str or bytes argument is not
mapped over unless wrapped in ``rf.mapped``.  A mapped argument is a
*source* of items:

- ``const``: an iterable known now (list, range, numpy, pandas, pyarrow)
- ``stream``: a generator or iterator, consumed chunk by chunk at run time
- ``node`` / ``map``: the result of a task / of a mapped task (element-wise)
- ``flatten_node`` / ``flatten_map``: the concatenation of a list of lists

In the stored arguments each mapped argument is replaced by ``MapInput(i)``.
"""

from __future__ import annotations

import collections.abc as cabc
from dataclasses import dataclass
from typing import Any

from rayflow.core.refs import MapInput, NodeRef, find_refs
from rayflow.exceptions import GraphError, MappingError


class unmapped:  # noqa: N801 - reads like Prefect's rf.unmapped(x)
    """Pass this argument whole to every item of a map."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


class mapped:  # noqa: N801
    """Map over this argument even though it is a str or bytes."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


@dataclass(frozen=True)
class FlattenRef:
    """``rf.flatten(node)``: map over the concatenation of node's list-of-lists result."""

    node: NodeRef


def flatten(node: Any) -> FlattenRef:
    if not isinstance(node, NodeRef):
        raise GraphError(f"rf.flatten takes a task result inside a flow, got {node!r}")
    return FlattenRef(node)


@dataclass(frozen=True)
class MapSource:
    name: str  # the argument it feeds, for messages
    kind: str  # const | stream | node | map | flatten_node | flatten_map
    key: str | None = None  # node key
    value: Any = None  # const / stream only
    owner: int = 0  # graph builder of the node ref, so refs cannot cross flows

    @property
    def streaming(self) -> bool:
        """Items arrive chunk by chunk from an upstream map: no barrier on it."""
        return self.kind in ("map", "flatten_map")


def _length(value: Any) -> int | None:
    if hasattr(value, "num_rows"):
        return value.num_rows
    return len(value) if isinstance(value, cabc.Sized) else None


def classify(
    key: str, arguments: dict[str, Any], node_kinds: dict[str, str]
) -> tuple[dict[str, Any], list[MapSource]]:
    """Replace each mapped argument by MapInput(i); return the new arguments and the sources."""
    out: dict[str, Any] = {}
    sources: list[MapSource] = []

    def add(name: str, source: MapSource) -> MapInput:
        sources.append(source)
        return MapInput(len(sources) - 1)

    for name, value in arguments.items():
        if isinstance(value, unmapped):
            out[name] = value.value
        elif isinstance(value, mapped):
            inner = value.value
            if isinstance(inner, (NodeRef, FlattenRef)):
                out[name] = _ref_source(name, inner, node_kinds, add)
            elif isinstance(inner, (str, bytes)):
                out[name] = add(name, MapSource(name, "const", value=list(inner) if isinstance(inner, str) else list(inner)))
            else:
                out[name] = _const_source(key, name, inner, add)
        elif isinstance(value, (NodeRef, FlattenRef)):
            out[name] = _ref_source(name, value, node_kinds, add)
        elif isinstance(value, (str, bytes)):
            out[name] = value
        else:
            out[name] = _const_source(key, name, value, add)
    if not sources:
        raise MappingError(f"task '{key}': .map() needs at least one argument to map over", task_key=key)
    check_lengths(key, {s.name: _length(s.value) for s in sources if s.kind == "const"})
    return out, sources


def _ref_source(name: str, ref: Any, node_kinds: dict[str, str], add: Any) -> MapInput:
    if isinstance(ref, FlattenRef):
        kind = "flatten_map" if node_kinds.get(ref.node._key) == "map" else "flatten_node"
        return add(name, MapSource(name, kind, key=ref.node._key, owner=ref.node._owner))
    kind = "map" if node_kinds.get(ref._key) == "map" else "node"
    return add(name, MapSource(name, kind, key=ref._key, owner=ref._owner))


def _const_source(key: str, name: str, value: Any, add: Any) -> MapInput:
    if find_refs(value):
        raise MappingError(
            f"task '{key}': argument '{name}' is a collection holding task results; "
            "mapping over it is not supported: return the collection from a task and map over that",
            task_key=key,
        )
    if isinstance(value, cabc.Iterator):
        return add(name, MapSource(name, "stream", value=value))
    if not isinstance(value, cabc.Iterable) and not hasattr(value, "num_rows"):  # pyarrow tables map rows
        raise MappingError(
            f"task '{key}': argument '{name}' is a {type(value).__name__}, which cannot be mapped over; "
            f"wrap it in rf.unmapped(...) to pass it whole to every item",
            task_key=key,
        )
    return add(name, MapSource(name, "const", value=value))


def check_lengths(key: str, lengths: dict[str, int | None]) -> None:
    known = {n: length for n, length in lengths.items() if length is not None}
    if len(set(known.values())) > 1:
        listing = ", ".join(f"{n} has {length}" for n, length in known.items())
        raise MappingError(
            f"task '{key}': mapped arguments have unequal lengths ({listing}); they are zipped, not truncated",
            task_key=key,
            lengths=known,
        )
