"""Where a map's items come from: one feed per mapped argument.

A ``WholeFeed`` has every item at once (a constant, a task's value, its
flattening).  A ``MapFeed`` (an upstream map, element-wise or flattened) and
a ``StreamFeed`` (a generator input, pushed by a feeder) arrive in segments
and *lead*: the consuming MapRun cuts its chunks along the leader's segments,
so chunk i can start as soon as segment i is there (pipelining).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rayflow.engine.maps.run import MapRun


@dataclass
class Segment:
    start: int
    stop: int
    handles: tuple[Any, ...]
    kind: str  # piece kind for items of this segment


def _covering(segments: list[Segment], lo: int, hi: int) -> list[tuple[str, tuple[Any, ...], int, int]] | None:
    """The parts of ``segments`` that make up items [lo, hi), or None if they do not cover it all."""
    out = [
        (seg.kind, seg.handles, max(lo, seg.start) - seg.start, min(hi, seg.stop) - seg.start)
        for seg in segments
        if seg.start < hi and seg.stop > lo
    ]
    return out if sum(p[3] - p[2] for p in out) == hi - lo else None


class WholeFeed:
    """Every item available at once: a constant, a task's result, or its flattening."""

    def __init__(self, name: str, kind: str, handle: Any, length: int):
        self.name, self.kind, self.handle, self.length = name, kind, handle, length

    leads = False

    def total(self) -> int:
        return self.length

    def pieces(self, lo: int, hi: int) -> list[tuple[str, tuple[Any, ...], int, int]] | None:
        return [(self.kind, (self.handle,), lo, hi)]


class MapFeed:
    """An upstream map, element-wise (or flattened): its final chunks are our segments."""

    leads = True

    def __init__(self, name: str, lookup: Callable[[], MapRun | None], flat: bool, key: str | None = None):
        self.name, self.lookup, self.flat, self.key = name, lookup, flat, key  # key: the upstream map's

    def segments(self) -> list[Segment]:
        upstream = self.lookup()
        if upstream is None:
            return []
        out, position = [], 0
        for chunk in upstream.chunks:
            if not chunk.final:
                break
            if self.flat:
                out.append(Segment(position, position + chunk.flat_count, tuple(chunk.handles), "flatten_chunk"))
                position += chunk.flat_count
            else:
                out.append(Segment(chunk.start, chunk.stop, tuple(chunk.handles), "chunk"))
        return out

    def total(self) -> int | None:
        upstream = self.lookup()
        if upstream is None or not upstream.done:
            return None
        return sum(c.flat_count for c in upstream.chunks) if self.flat else upstream.total

    def pieces(self, lo: int, hi: int) -> list[tuple[str, tuple[Any, ...], int, int]] | None:
        return _covering(self.segments(), lo, hi)  # None while part of [lo, hi) is not final


class StreamFeed:
    """Items pushed in segments by a feeder (a generator input), until it is exhausted."""

    leads = True

    def __init__(self, name: str, stream_id: int):
        self.name, self.stream_id = name, stream_id
        self._segments: list[Segment] = []
        self.exhausted = False
        self.requested = 0  # items asked of the feeder so far

    def push(self, handle: Any, count: int, exhausted: bool) -> None:
        start = self._segments[-1].stop if self._segments else 0
        if count:
            self._segments.append(Segment(start, start + count, (handle,), "column"))
        self.exhausted = self.exhausted or exhausted

    def received(self) -> int:
        return self._segments[-1].stop if self._segments else 0

    def release(self, index: int) -> None:
        """Segment ``index`` is consumed for good: drop its handle so its memory can be freed."""
        seg = self._segments[index]
        self._segments[index] = Segment(seg.start, seg.stop, (), seg.kind)

    def segments(self) -> list[Segment]:
        return list(self._segments)

    def total(self) -> int | None:
        return self.received() if self.exhausted else None

    def pieces(self, lo: int, hi: int) -> list[tuple[str, tuple[Any, ...], int, int]] | None:
        return _covering(self._segments, lo, hi)
