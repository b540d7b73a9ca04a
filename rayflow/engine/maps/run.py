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
for a retry, the handles of the chunk's results, and the indexes of the
items that ended other than SUCCESS (never anything per successful item).
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
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rayflow.engine import columns as C
from rayflow.engine.maps.feeds import MapFeed, StreamFeed
from rayflow.engine.protocol import ChunkHandle, ChunkJob, ChunkSummary, MapHandle, Piece
from rayflow.engine.policy import SPLIT, Loss, after_retry_signal, after_worker_death, halves, next_retry
from rayflow.states import FAILED_TYPES, State, StateType

TARGET_SECONDS = 0.25
FIRST_CHUNK = 64
TRUSTED_SECONDS = 0.01  # a chunk shorter than this measures overheads more than items
MAX_GROWTH = 256  # a chunk not yet trusted grows at most this much per measurement
MAX_CHUNK = 1 << 18  # items: bounds the memory a chunk needs (a generator's chunk is built in the driver)
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


@dataclass(eq=False)
class Chunk:
    index: int  # its id within the map (chunks made so far), not its position: a split chunk is replaced
    start: int
    stop: int
    handles: list[Any] = field(default_factory=list)  # first result, then retries'
    counts: dict[int, int] = field(default_factory=dict)  # final items per code
    waiting: dict[int, tuple[float, int]] = field(default_factory=dict)  # item -> (due, next attempt)
    running: int = 0  # works in flight for this chunk
    flat_count: int = 0
    started: bool = False
    queued: int = 0  # its parts waiting in MapRun.parts to run (halves of a lost work)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (item index in the map, "Type: message")
    outcomes: dict[int, int] | None = None  # item in chunk -> code, final FAILED/TIMED_OUT items only
    spent: dict[int, int] | None = None  # item in chunk -> its `retries` used (failures retried, never rf.Retry)
    lost: bool = False  # its first run was lost for good: every item FAILED
    load: tuple[str, ...] = ()  # a resumed run: the stored results its first work loads

    @property
    def final(self) -> bool:
        return self.started and self.running == 0 and not self.waiting and not self.queued

    @property
    def size(self) -> int:
        return self.stop - self.start


class ChunkSizer:
    """How many items the next chunk of a map gets, from what its chunks measured so far.

    ``chunk_size`` when the user set it; else ``FIRST_CHUNK`` until a first chunk is
    measured; then enough items for about ``TARGET_SECONDS`` of work at the measured time
    per item, but at most ``MAX_GROWTH`` times the largest chunk measured until one ran
    ``TRUSTED_SECONDS`` (a shorter time is mostly fixed overhead, and timer noise), never
    more than a quarter of the items per CPU (every CPU gets work) nor ``MAX_CHUNK``.
    A short chunk overstates the time per item (its fixed costs are spread over few
    items), so the size aimed at errs small; the growth cap guards the other way.

    I/O-bound items (``at_once`` > 1: an async task, or ``concurrency=``) run ``at_once``
    at a time in a chunk, so a chunk's time is its waves of ``at_once``, not the sum of its
    items: the first chunks are one wave (``at_once`` items, or the map's share per CPU if
    smaller), later sizes are whole waves, and the per-CPU cap is a whole share per CPU.
    """

    def __init__(self, chunk_size: int | None, cpus: int, at_once: int = 1):
        self.fixed = chunk_size
        self.cpus = max(1, cpus)
        self.at_once = max(1, at_once)
        self.per_item: float | None = None  # seconds, measured in workers
        self.largest_measured = 0  # items in the largest first-run chunk measured so far
        self.largest_seconds = 0.0  # and how long it ran
        self.trusted = False  # whether a measurement lasted TRUSTED_SECONDS

    def measure(self, items: int, seconds: float) -> None:
        """A first run of a chunk of ``items`` took ``seconds``.  The largest chunk so far sets the
        time per item; a smaller one only lowers it: fixed costs only ever overstate it, so a
        faster smaller chunk shows that an earlier measurement carried a one-off cost (a first
        import, a cache loaded, a slow disk), which would otherwise keep chunks small for good."""
        if not items:
            return
        seconds = max(seconds, 0.0)
        if items < self.largest_measured:
            if self.per_item is not None and seconds / items < self.per_item:
                self.per_item = seconds / items
                self.trusted = self.trusted or seconds >= TRUSTED_SECONDS
            return
        self.largest_measured, self.largest_seconds = items, seconds
        self.per_item = seconds / items
        self.trusted = self.trusted or seconds >= TRUSTED_SECONDS

    def size(self, total: int | None) -> int:
        if self.fixed:
            return self.fixed
        waves = self.at_once > 1
        if self.per_item is None:
            if not waves:
                return FIRST_CHUNK
            return min(self.at_once, math.ceil(total / self.cpus)) if total else self.at_once
        size = max(1, int(TARGET_SECONDS / max(self.per_item, 1e-9)))
        if not self.trusted:  # a short chunk's time is mostly overhead: it overstates per_item,
            size = min(size, MAX_GROWTH * self.largest_measured)  # but timer noise could understate it
        if waves:  # whole waves: a part of one takes as long as all of it
            size = max(self.at_once, size - size % self.at_once)
        if total is not None:
            size = min(size, max(1, math.ceil(total / (self.cpus if waves else 4 * self.cpus))))
        return min(size, MAX_CHUNK)


class MapRun:
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
    ):
        self.key = key
        self.options = options
        self.sources = sources
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
        self.sizer = ChunkSizer(options.chunk_size, cpus, at_once)
        self.fatal: str | None = None
        self.leader = next((s for s in sources if s.leads), None)
        self.dispatched = 0  # items covered by chunks so far (own chunking / leader segments)
        self.next_segment = 0
        self.done = False
        self.total: int | None = None
        self.started_at = clock()
        self._counts: dict[int, int] = {}  # final items per code, over all chunks
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
            while self.dispatched < self.total and self.in_flight + len(out) < self.max_in_flight:
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
        if self.fatal is None:
            for lo, hi, load in self._new_ranges():
                chunk = self._new_chunk(lo, hi, load)
                self.chunks.append(chunk)
                job = self._job(chunk, None, None)
                if job is None:  # a non-leading source does not cover it yet: retry later
                    self.chunks.pop()
                    del self.by_id[chunk.index]
                    self._unread(lo, hi)
                    break
                jobs.append(job)
        self._check_done()
        return jobs

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
        self, chunk: Chunk, indices: tuple[int, ...] | None, attempts: tuple[int, ...] | None, deaths: int = 0
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
        )
        return job, handles

    # -- outcomes ------------------------------------------------------------

    def on_summary(self, summary: ChunkSummary, handle: Any, now: float) -> None:
        chunk = self.by_id[summary.chunk]
        chunk.running -= 1
        self.in_flight -= 1
        chunk.handles.append(handle)
        if summary.indices is None and not summary.loaded:  # a first run: retries and loads measure little
            self.sizer.measure(summary.size, summary.finished_at - summary.started_at - summary.overhead)
        chunk.flat_count += summary.flat_count
        self.cached += summary.cached
        counts = dict(summary.counts)
        options = self.options
        spent = chunk.spent if chunk.spent is not None else {}
        for item, code, retryable, attempt in summary.failed:  # the ledger a plain task keeps (policy.py)
            delay = next_retry(options, spent.get(item, 0), retryable=retryable)
            if delay is not None:
                spent[item] = spent.get(item, 0) + 1
                chunk.waiting[item] = (now + delay, attempt + 1)
                counts[code] -= 1
            else:  # final: its index is kept (failures only, never successful items)
                if chunk.outcomes is None:
                    chunk.outcomes = {}
                chunk.outcomes[item] = code
        for item, delay, attempt in summary.retry:  # rf.Retry: retried even past `retries`, spends none
            chunk.waiting[item] = (now + after_retry_signal(options, spent.get(item, 0), delay), attempt + 1)
            counts[C.RETRYING] -= 1
        chunk.spent = spent if spent and not chunk.final else None  # a final chunk's items retry no more
        totals = self._counts
        for code, n in counts.items():
            if n:
                chunk.counts[code] = chunk.counts.get(code, 0) + n
                totals[code] = totals.get(code, 0) + n
        if summary.errors:
            chunk.errors = (chunk.errors + [(chunk.start + i, text) for i, text in summary.errors])[-20:]
        self._version += 1
        if chunk.final and isinstance(self.leader, StreamFeed):
            self._release_segment(chunk)
        self._check_done()

    def _release_segment(self, chunk: Chunk) -> None:
        """Drop the stream segment ``chunk`` came from once every chunk of it is final (a split
        chunk's halves are chunks of the same segment, and their retries need its items)."""
        for i, seg in enumerate(self.leader.segments()):
            if seg.start <= chunk.start < seg.stop:
                if all(c.final for c in self.chunks if seg.start <= c.start < seg.stop):
                    self.leader.release(i)
                return
        raise LookupError(chunk.start)

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

    def release(self, job: ChunkJob) -> None:
        """A work ended without a result."""
        self.by_id[job.chunk].running -= 1
        self.in_flight -= 1

    def settle_lost(self, job: ChunkJob, handle: Any, message: str) -> None:
        """Record a work whose system retries are spent: its items failed (``handle`` holds that)."""
        chunk = self.by_id[job.chunk]
        chunk.handles.append(handle)
        n = len(job.indices) if job.indices is not None else chunk.size
        chunk.counts[C.FAILED] = chunk.counts.get(C.FAILED, 0) + n
        self._counts[C.FAILED] = self._counts.get(C.FAILED, 0) + n
        if job.indices is None:
            chunk.lost = True
        else:
            chunk.outcomes = {**(chunk.outcomes or {}), **dict.fromkeys(job.indices, C.FAILED)}
        first = job.start + (job.indices[0] if job.indices else 0)
        chunk.errors = (chunk.errors + [(first, message)])[-20:]
        self._version += 1
        self._check_done()

    def cancel(self) -> None:
        self.fatal = self.fatal or "cancelled"
        self.parts.clear()
        for chunk in self.chunks:
            chunk.waiting.clear()
            chunk.running = chunk.queued = 0
        self.in_flight = 0
        self.done = True

    def _check_done(self) -> None:
        if self.done or self.in_flight or self.parts:
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

    # -- reporting -----------------------------------------------------------

    def counts(self) -> dict[StateType, int]:
        """Final items per state (kept as chunks end: no walk over the chunks)."""
        return {C.CODES[code]: n for code, n in self._counts.items() if n}

    def outcomes(self) -> dict[int, int]:
        """Item index -> state code of every final item that did not succeed, in index order.

        Where the indexes come from: failed and timed-out items are named by the chunk
        summaries (their indexes are kept as they arrive), a lost work fails all of its
        items; items gated by an upstream map's item (TRIGGER_FAILED, or SKIPPED under
        ``skip_on_upstream_skip``) are those whose upstream item failed or was skipped, read
        from the upstream maps' outcomes.  A chunk summary counts, but does not name, items
        that raised ``rf.Skip`` themselves: only those take the first free indexes of their
        chunk.  Computed on demand (a trigger asks once a map is done) and cached.
        """
        upstream = [
            run for s in self.sources if isinstance(s, MapFeed) and not s.flat and (run := s.lookup()) is not None
        ]
        version = (self._version, *(id(u) for u in upstream), *(u._version for u in upstream))
        if self._outcomes is not None and self._outcomes[0] == version:
            return self._outcomes[1]
        gates: dict[int, bool] = {}  # index -> True: an upstream item failed, False: one was skipped
        for run in upstream:
            for i, code in run.outcomes().items():
                if code in C.FINAL_FAILED:
                    gates[i] = True
                elif code == C.SKIPPED:
                    gates.setdefault(i, False)
        gate_keys = sorted(gates)
        out: dict[int, int] = {}
        for chunk in self.chunks:
            if any(code != C.SUCCESS and n for code, n in chunk.counts.items()):
                out.update(sorted(self._chunk_outcomes(chunk, gates, gate_keys).items()))
        self._outcomes = (version, out)
        return out

    def _chunk_outcomes(self, chunk: Chunk, gates: dict[int, bool], gate_keys: list[int]) -> dict[int, int]:
        if chunk.lost:
            return dict.fromkeys(range(chunk.start, chunk.stop), C.FAILED)
        need = {code: n for code, n in chunk.counts.items() if code != C.SUCCESS and n > 0}
        out: dict[int, int] = {}
        for item, code in (chunk.outcomes or {}).items():
            out[chunk.start + item] = code
            need[code] = need.get(code, 0) - 1
        if need.get(C.TRIGGER_FAILED, 0) > 0 or need.get(C.SKIPPED, 0) > 0:
            skip_on_skip = self.options.skip_on_upstream_skip
            lo, hi = bisect.bisect_left(gate_keys, chunk.start), bisect.bisect_left(gate_keys, chunk.stop)
            for i in gate_keys[lo:hi]:
                code = C.TRIGGER_FAILED if gates[i] else (C.SKIPPED if skip_on_skip else None)
                if code is not None and i not in out and need.get(code, 0) > 0:
                    out[i] = code
                    need[code] -= 1
        left = [(code, n) for code, n in sorted(need.items()) if n > 0]
        if left:  # not named by any summary (rf.Skip): the chunk's first free indexes
            free = (i for i in range(chunk.start, chunk.stop) if i not in out)
            for code, n in left:
                for i in itertools.islice(free, n):
                    out[i] = code
        return out

    def handle(self) -> MapHandle:
        chunks, position = [], 0
        for c in self.chunks:
            chunks.append(ChunkHandle(c.start, c.stop, tuple(c.handles), position, position + c.flat_count))
            position += c.flat_count
        return MapHandle(tuple(chunks), self.total or 0)

    def final_state(self) -> State:
        timing = {"started_at": self.started_at, "finished_at": self.clock()}
        if self.fatal is not None:
            return State(type=StateType.FAILED, message=self.fatal, **timing)
        counts = self.counts()
        total = self.total or 0
        failed = sum(n for t, n in counts.items() if t in FAILED_TYPES)
        ok = total - failed
        summary = f"{total} items: {ok} ok" + (f", {failed} failed" if failed else "")
        skipped = counts.get(StateType.SKIPPED, 0)
        if skipped:
            summary += f" ({skipped} skipped)"
        if self.cached:
            summary += f" ({self.cached} from the cache)"
        first = next((e for c in self.chunks for e in c.errors), None)
        if first is not None and failed:
            summary += f"; first error: item {first[0]}: {first[1]}"
        if total == 0 or ok / total >= self.options.min_success_ratio:
            return State(type=StateType.MAPPED, message=summary, **timing)
        return State(type=StateType.FAILED, message=summary, **timing)

    def next_due(self) -> float | None:
        dues = [t for c in self.chunks for t, _ in c.waiting.values()]
        return min(dues) if dues else None
