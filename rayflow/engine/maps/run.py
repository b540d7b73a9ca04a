"""MapRun: the orchestrator's state for one mapped task, executor-agnostic.

Items are cut into chunks; each chunk is one unit of work.  Where a chunk's
items come from is a *source* per mapped argument (``maps.feeds``).  When a source arrives
piecewise (an upstream map, a flatten of one, a stream) the first such
source leads: chunk i covers the leader's segment i, so chunk i can start
as soon as upstream chunk i is final (pipelining, no barrier).  Otherwise
the map cuts its own chunks, sized by a ``ChunkSizer`` from the measured
time per item so a chunk runs about ``TARGET_SECONDS`` (first chunks ramp up
from ``FIRST_CHUNK`` items), unless ``chunk_size`` is set.

It holds per-chunk metadata only: counts per state code, the items waiting
for a retry (with where each that stopped mid-loop resumes: ``Chunk.loops``,
given to the works that run them again as ``ChunkJob.looped``), the handles
of the chunk's results, and the indexes of the items that ended other than
SUCCESS (never anything per successful item).
At most ``max_in_flight`` works per map run at once (backpressure).

A work lost with its worker is narrowed down (``on_lost``, deciding by
``policy.after_worker_death``): a chunk's first run that died is replaced, in
place, by two chunks of half its items each, and a lost retry of some items
by two retries of half of them; the halves queue in ``parts`` and start
before new chunks.  Splitting repeats until the item that kills its worker
runs alone; only that item then fails.  So chunks are looked up by id
(``by_id``, ``ChunkJob.chunk``), not by position, and ``chunks`` stays in
item order.  A map splits at most ``MAX_SPLITS`` works.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Callable
from typing import Any

from rayflow.core.reducers import Partials
from rayflow.engine.maps.feeds import MapFeed, StreamFeed
from rayflow.engine.maps.outcomes import Chunk, Outcomes
from rayflow.engine.maps.sizer import (
    FIRST_BUDGET,
    FIRST_CHUNK,
    MAX_BATCH_CHUNK,
    MAX_CHUNK,
    MAX_GROWTH,
    SMALL_MAP,
    TARGET_SECONDS,
    TRUSTED_SECONDS,
    ChunkSizer,
)
from rayflow.engine.policy import SPLIT, Loss, after_worker_death, halves
from rayflow.engine.protocol import ChunkHandle, ChunkJob, MapHandle, Piece

__all__ = [
    "FIRST_BUDGET", "FIRST_CHUNK", "MAX_BATCH_CHUNK", "MAX_CHUNK", "MAX_GROWTH", "MAX_SPLITS", "SMALL_MAP", "TARGET_SECONDS", "TRUSTED_SECONDS", "Chunk", "ChunkSizer",
    "MapRun",
]

# Lost works a map splits to find the items that kill their workers: about 6 per such item in
# 64-item chunks, 18 in the largest; past it (a function that crashes on every item) a lost
# work runs again whole under system_retries and then fails whole, so deaths stay bounded.
MAX_SPLITS = 32


def _unequal_lengths(lengths: dict[str, int]) -> str | None:
    """The MappingError text when zipped sources differ in length, else None."""
    if len(set(lengths.values())) <= 1:
        return None
    listing = ", ".join(f"{name} has {n}" for name, n in lengths.items())
    return f"MappingError: mapped arguments have unequal lengths ({listing})"


def _looped(chunk: Chunk, indices: tuple[int, ...] | None) -> tuple[tuple[int, bytes], ...]:
    """A retry's items that stopped mid-loop, with where each resumes (none on a chunk's first run)."""
    if not chunk.loops or indices is None:
        return ()
    return tuple((i, chunk.loops[i]) for i in indices if i in chunk.loops)


class MapRun(Outcomes):
    def __init__(
        self,
        key: str,
        options: Any,
        sources: list[Any],
        *,
        max_in_flight: int,
        cpus: int,
        clock: Callable[[], float],
        preset: tuple[tuple[int, int, tuple[str, ...]], ...] = (),
        at_once: int = 1,
        budgeted: bool = False,
    ):
        self.key = key
        self.options = options
        self.sources = sources
        # per source, the map its items come from element-wise: the worker names it when it gates an item
        self.upstream_keys = tuple(s.key if isinstance(s, MapFeed) and not s.flat else None for s in sources)
        self.max_in_flight = options.max_in_flight or max_in_flight
        self.cpus = max(1, cpus)
        self.clock = clock
        self.chunks: list[Chunk] = []  # in item order
        self.by_id: dict[int, Chunk] = {}
        self._made = 0  # chunks made so far: the next chunk's id
        self.parts: collections.deque[tuple[Chunk, tuple[int, ...] | None, tuple[int, ...] | None, int]] = (
            collections.deque()
        )  # halves of lost works to run: (chunk, indices or None for its whole first run, attempts, deaths)
        self.splits = 0  # lost works split so far
        self.in_flight = 0
        # budgeted: its first chunks may stop early (ChunkSizer); only where it cuts its own chunks,
        # and never along a resumed run's stored chunks
        budgeted = budgeted and not preset and not any(s.leads for s in sources)
        self.sizer = ChunkSizer(options.chunk_size, cpus, at_once, batch=options.batch, budgeted=budgeted)
        self.rest: list[Chunk] = []  # items a budgeted chunk did not reach, as chunks not started, in item order
        self.fatal: str | None = None
        self.leader = next((s for s in sources if s.leads), None)
        self.dispatched = 0  # items covered by chunks so far (own chunking / leader segments)
        self.next_segment = 0
        self.done = False
        self.total: int | None = None
        self.started_at = clock()
        self.tally: dict[str, int] = {}  # items per state name, the sum of the map's WorkFacts counts
        self.cached = 0  # items whose values came from the per-item cache (counted SUCCESS)
        self._version = 0  # bumped when an item becomes final: keys the cache of outcomes()
        self._outcomes: tuple[tuple[int, ...], dict[int, int]] | None = None
        # A resumed run: chunks its earlier run stored, start -> (stop, paths); cut along them.
        self._preset = {start: (stop, paths) for start, stop, paths in preset}
        self._preset_starts = sorted(self._preset)
        self._check_whole_lengths()

    # -- shape ---------------------------------------------------------------

    def _check_whole_lengths(self) -> None:
        lengths = {s.name: t for s in self.sources if not s.leads and (t := s.total()) is not None}
        self.fatal = _unequal_lengths(lengths)
        if self.leader is None:
            self.total = next(iter(lengths.values())) if lengths else 0

    # -- dispatch ------------------------------------------------------------

    def chunk_size(self) -> int:
        return self.sizer.size(self.total)

    def _new_ranges(self) -> list[tuple[int, int, tuple[str, ...]]]:
        """Ranges of chunks that can be created now, each with the stored results it loads (if any)."""
        if self.leader is None:
            out = []
            limit = min(self.max_in_flight, self.cpus) if self.sizer.measuring(self.total) else self.max_in_flight
            while self.dispatched < self.total and self.in_flight + len(out) < limit:
                start = self.dispatched
                stored = self._preset.get(start)
                if stored is not None and stored[0] <= self.total:
                    out.append((start, stored[0], stored[1]))
                    self.dispatched = stored[0]
                    continue
                stop = min(self.total, start + self.chunk_size())
                later = bisect.bisect_right(self._preset_starts, start)
                if later < len(self._preset_starts):  # stop where a stored chunk begins
                    stop = min(stop, self._preset_starts[later])
                out.append((start, stop, ()))
                self.dispatched = stop
            return out
        out = []
        segments = self.leader.segments()
        while self.next_segment < len(segments) and self.in_flight + len(out) < self.max_in_flight:
            seg = segments[self.next_segment]
            self.next_segment += 1
            if seg.stop > seg.start:
                stored = self._preset.get(seg.start)
                out.append((seg.start, seg.stop, stored[1] if stored is not None and stored[0] == seg.stop else ()))
        return out

    def stream_demand(self) -> int:
        """Items a stream leader should be asked for now (0: none)."""
        if not isinstance(self.leader, StreamFeed) or self.leader.exhausted or self.fatal:
            return 0
        pending = self.leader.received() - self.dispatched_stream_items()
        if self.in_flight >= self.max_in_flight or pending > 0 or self.leader.requested > self.leader.received():
            return 0
        return self.chunk_size()

    def stream_requests(self) -> list[tuple[StreamFeed, int]]:
        """Items each generator input should be asked for now: the leading one as backpressure
        allows (``stream_demand``), every other one enough to keep up with what the map covers,
        and one item past the end of the leader once that is known, to tell a longer one."""
        want = self.stream_demand()
        out = [(self.leader, want)] if want else []
        followers = [s for s in self.sources if isinstance(s, StreamFeed) and s is not self.leader and not s.exhausted]
        if not followers or self.fatal or self.leader is None:
            return out
        total = self.leader.total()
        if total is not None:
            target = total + 1
        elif isinstance(self.leader, StreamFeed):
            target = self.leader.received() + want if want else max(self.leader.requested, self.leader.received())
        else:
            segments = self.leader.segments()
            target = segments[-1].stop if segments else 0
        for stream in followers:
            if stream.requested <= stream.received() < target:  # none outstanding: a feeder keeps one request
                out.append((stream, target - stream.received()))
        return out

    def dispatched_stream_items(self) -> int:
        segments = self.leader.segments()
        return segments[self.next_segment - 1].stop if self.next_segment else 0

    def next_jobs(self, now: float) -> list[tuple[ChunkJob, list[Any]]]:
        """Works to submit now: halves of lost works first, then due retries, then new chunks, within max_in_flight."""
        jobs: list[tuple[ChunkJob, list[Any]]] = []
        if self.done:
            return jobs
        while self.parts and self.in_flight < self.max_in_flight:
            chunk, indices, attempts, deaths = self.parts.popleft()
            chunk.queued -= 1
            part = self._job(chunk, indices, attempts, deaths)
            if part is None:  # cannot happen: the lost work's inputs were there, and are kept until it is final
                raise LookupError(f"the inputs of items {chunk.start}-{chunk.stop - 1} of map {self.key} are gone")
            jobs.append(part)
        for chunk in self.chunks:
            if self.in_flight >= self.max_in_flight:
                break
            due = sorted(i for i, (t, _) in chunk.waiting.items() if t <= now)
            if due and chunk.running == 0:
                attempts = tuple(chunk.waiting.pop(i)[1] for i in due)
                job = self._job(chunk, tuple(due), attempts)
                if job is not None:
                    jobs.append(job)
        while self.rest and self.in_flight < self.max_in_flight and self.fatal is None:
            rest = self._job(self._next_rest(), None, None)
            if rest is None:  # cannot happen: the sources covered the chunk it was cut from
                raise LookupError(f"the inputs of map {self.key}'s items not reached by a budgeted chunk are gone")
            jobs.append(rest)
        if self.fatal is None:
            for lo, hi, load in self._new_ranges():
                chunk = self._new_chunk(lo, hi, load)
                self.chunks.append(chunk)
                job = self._job(chunk, None, None, budget=self.sizer.budget(self.total))
                if job is None:  # a non-leading source does not cover it yet: retry later
                    self.chunks.pop()
                    del self.by_id[chunk.index]
                    self._unread(lo, hi)
                    break
                jobs.append(job)
        self._check_done()
        return jobs

    def cut_short(self, chunk: Chunk, done: int) -> None:
        """``chunk``'s first run stopped at its budget after its first ``done`` items: it is those
        items; the rest become a chunk not started (in ``rest`` and in ``chunks``, where a map
        consuming this one stops: it is not final), cut again by the sizer when it is run."""
        bisect.insort(self.rest, self._cut(chunk, done), key=lambda c: c.start)

    def _next_rest(self) -> Chunk:
        """The first chunk of ``rest``, as many of its items as the sizer says (the others stay)."""
        chunk, size = self.rest[0], self.chunk_size()
        if chunk.size <= size:
            return self.rest.pop(0)
        self.rest[0] = self._cut(chunk, size)
        return chunk

    def _cut(self, chunk: Chunk, size: int) -> Chunk:
        """``chunk`` keeps its first ``size`` items; the new chunk after it in ``chunks``, the rest."""
        tail = self._new_chunk(chunk.start + size, chunk.stop)
        chunk.stop = tail.start
        self.chunks.insert(self.chunks.index(chunk) + 1, tail)
        return tail

    def _new_chunk(self, lo: int, hi: int, load: tuple[str, ...] = ()) -> Chunk:
        chunk = self.by_id[self._made] = Chunk(self._made, lo, hi, load=load)
        self._made += 1
        return chunk

    def _unread(self, lo: int, hi: int) -> None:
        if self.leader is None:
            self.dispatched = lo
        else:
            self.next_segment -= 1

    def _job(
        self, chunk: Chunk, indices: tuple[int, ...] | None, attempts: tuple[int, ...] | None, deaths: int = 0,
        budget: float = 0.0,
    ) -> tuple[ChunkJob, list[Any]] | None:
        handles: list[Any] = []
        sources = []
        for source in self.sources:
            total = source.total()
            if total is not None and chunk.stop > total:
                longer = self.leader.name if self.leader is not None and self.leader is not source else "another"
                self.fatal = (  # the chunk's range came from the leading argument: it has that many at least
                    f"MappingError: mapped arguments have unequal lengths "
                    f"({source.name} has {total}, {longer} has at least {chunk.stop})"
                )
                return None
            pieces = source.pieces(chunk.start, chunk.stop)
            if pieces is None:
                return None
            out = []
            for kind, objs, lo, hi in pieces:
                out.append(Piece(kind, tuple(range(len(handles), len(handles) + len(objs))), lo, hi))
                handles.extend(objs)
            sources.append(tuple(out))
        chunk.started = True
        chunk.running += 1
        self.in_flight += 1
        job = ChunkJob(
            map_key=self.key,
            chunk=chunk.index,
            start=chunk.start,
            size=chunk.size,
            sources=tuple(sources),
            indices=indices,
            attempts=attempts,
            load=chunk.load if indices is None else (),
            deaths=deaths,
            upstream=self.upstream_keys,
            looped=_looped(chunk, indices),
            budget=budget,
        )
        return job, handles

    def on_lost(self, job: ChunkJob) -> Loss:
        """A work of this map died with its worker: split it in halves (queued in ``parts``), or
        say it runs again whole ("retry": it stays in flight) or fails ("fail": ``release`` and
        ``settle_lost`` it).  See ``policy.after_worker_death``."""
        items = len(job.indices) if job.indices is not None else job.size
        decision = after_worker_death(
            items=items, deaths=job.deaths + 1, options=self.options, may_split=self.splits < MAX_SPLITS
        )
        if decision == SPLIT:
            self._split(job)
        return decision

    def _split(self, job: ChunkJob) -> None:
        chunk = self.by_id[job.chunk]
        self.release(job)
        self.splits += 1
        deaths = job.deaths + 1
        if job.indices is None:  # its first run: two chunks in its place, each a first run of its half
            low, high = halves(range(chunk.start, chunk.stop))
            parts = [self._new_chunk(r.start, r.stop) for r in (low, high)]
            at = bisect.bisect_left(self.chunks, chunk.start, key=lambda c: c.start)
            assert self.chunks[at] is chunk
            self.chunks[at : at + 1] = parts
            del self.by_id[chunk.index]
            for part in parts:
                part.queued += 1
                self.parts.append((part, None, None, deaths))
            return
        attempts = job.attempts or (1,) * len(job.indices)
        for indices, tries in zip(halves(job.indices), halves(attempts)):  # a retry: two retries of its halves
            chunk.queued += 1
            self.parts.append((chunk, indices, tries, deaths))

    def cancel(self) -> None:
        self.fatal = self.fatal or "cancelled"
        self.parts.clear()
        self.rest.clear()
        for chunk in self.chunks:
            chunk.waiting.clear()
            chunk.running = chunk.queued = 0
        self.in_flight = 0
        self.done = True

    def _check_done(self) -> None:
        if self.done or self.in_flight or self.parts or (self.rest and self.fatal is None):
            return
        if any(c.waiting for c in self.chunks):
            return
        if self.fatal is not None:
            self.done = True
            return
        if self.leader is None:
            self.done = self.dispatched >= self.total
            return
        total = self.leader.total()
        if total is None or self.next_segment < len(self.leader.segments()):
            return
        streams = [s for s in self.sources if isinstance(s, StreamFeed) and s is not self.leader]
        if any(not s.exhausted and s.received() <= total for s in streams):
            return  # asked for one item past the leader's end: is it longer?
        self.total = total
        longer = [s for s in streams if s.received() > total]
        if longer:
            self.fatal = (
                f"MappingError: mapped arguments have unequal lengths ({self.leader.name} has {total}, "
                f"{longer[0].name} has more than {total})"
            )
        else:
            self.fatal = _unequal_lengths({s.name: t for s in self.sources if (t := s.total()) is not None})
        self.done = True

    def reduce_parts(self) -> Partials | None:
        """The parts of the rf.reduce folded into this map's chunks (core.reducers), in chunk order,
        when the map ended and every chunk's one result reported its part (a number, or none);
        None otherwise (a retried, lost or loaded chunk: the reduce makes it from the values)."""
        if not self.done or self.fatal is not None:
            return None
        out = Partials()
        for chunk in self.chunks:
            if len(chunk.handles) != 1 or chunk.partial is None:
                return None
            out.extend(chunk.partial)
        return out

    def handle(self) -> MapHandle:
        chunks, position = [], 0
        for c in self.chunks:
            chunks.append(ChunkHandle(c.start, c.stop, tuple(c.handles), position, position + c.flat_count))
            position += c.flat_count
        return MapHandle(tuple(chunks), self.total or 0)

    def next_due(self) -> float | None:
        dues = [t for c in self.chunks for t, _ in c.waiting.values()]
        return min(dues) if dues else None
