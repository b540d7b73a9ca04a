"""ChunkSizer: how many items a map's next chunk gets, from the time per item its chunks measured."""

from __future__ import annotations

import math

TARGET_SECONDS = 0.25
FIRST_CHUNK = 64
SMALL_MAP = 16384  # items: a sized map of at most this many starts with one chunk per CPU, unmeasured
TRUSTED_SECONDS = 0.01  # a chunk shorter than this measures overheads more than items
MAX_GROWTH = 256  # a chunk not yet trusted grows at most this much per measurement
MAX_CHUNK = 1 << 18  # items: bounds the memory a chunk needs (a generator's chunk is built in the driver)
MAX_BATCH_CHUNK = 1 << 20  # items: the same for a batch=True map's unmeasured chunks (its input is not a generator)
FIRST_BUDGET = TARGET_SECONDS  # seconds a budgeted first chunk runs at most before it stops (ChunkJob.budget)


class ChunkSizer:
    """How many items the next chunk of a map gets, from what its chunks measured so far.

    ``chunk_size`` when the user set it; else, for a map of a known ``total`` of at most
    ``SMALL_MAP`` items, one chunk per CPU (the whole map in one wave: measuring first would
    cost a round trip more than the items themselves, for small maps of fast items); for a
    ``batch=True`` map of a known ``total``, whatever its size, one chunk per CPU of at most
    ``MAX_BATCH_CHUNK`` items, unmeasured too (a batch function is vectorised: its time is
    mostly the call's, and a measuring wave and a ramp cost more round trips than its items:
    17 Ray tasks in 6 waves for 10^6 items; one that is slow per item sets ``chunk_size``); else
    ``FIRST_CHUNK`` until a first chunk is measured; then enough items for about ``TARGET_SECONDS`` of work at the measured time
    per item, but at most ``MAX_GROWTH`` times the largest chunk measured until one ran
    ``TRUSTED_SECONDS`` (a shorter time is mostly fixed overhead, and timer noise), never
    more than a quarter of the items per CPU (every CPU gets work) nor ``MAX_CHUNK``.
    A short chunk overstates the time per item (its fixed costs are spread over few
    items), so the size aimed at errs small; the growth cap guards the other way.

    ``budgeted`` (a map of its own chunking whose first chunks may stop early: not fused, not
    resumed): a sized map of more than ``SMALL_MAP`` items is not measured first either.  It
    starts with one chunk per CPU (at most ``MAX_CHUNK`` items) whose works stop after
    ``FIRST_BUDGET`` seconds (``budget``), the items they did not reach cut by the time per item
    they measured: a map of fast items runs in one wave, one of slow items is measured in
    ``FIRST_BUDGET`` at most (64 items of 10 ms took 0.64 s to measure).

    I/O-bound items (``at_once`` > 1: an async task, or ``concurrency=``) run ``at_once``
    at a time in a chunk, so a chunk's time is its waves of ``at_once``, not the sum of its
    items: the first chunks are one wave (``at_once`` items, or the map's share per CPU if
    smaller), later sizes are whole waves, and the per-CPU cap is a whole share per CPU.
    """

    def __init__(self, chunk_size: int | None, cpus: int, at_once: int = 1, batch: bool = False, budgeted: bool = False):
        self.fixed = chunk_size
        self.batch = batch
        self.budgeted = budgeted
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

    def measuring(self, total: int | None) -> bool:
        """Whether the next chunks are ``FIRST_CHUNK`` items, to measure: one per CPU is enough
        (more would only queue in Ray ahead of the chunks sized from what they measure)."""
        if self.fixed or self.per_item is not None or self.at_once > 1:
            return False
        return total is None or (total > SMALL_MAP and not self.batch and not self.budgeted)

    def budget(self, total: int | None) -> float:
        """Seconds after which the next chunk's work may stop, its first items done (0: it runs
        whole): a budgeted sized map's chunks until a first one is measured."""
        if not self.budgeted or self.batch or self.fixed or self.per_item is not None or self.at_once > 1:
            return 0.0
        return FIRST_BUDGET if total is not None and total > SMALL_MAP else 0.0

    def size(self, total: int | None) -> int:
        if self.fixed:
            return self.fixed
        waves = self.at_once > 1
        if self.per_item is None:
            if not waves:
                if self.measuring(total):
                    return FIRST_CHUNK
                return min(MAX_BATCH_CHUNK if self.batch else MAX_CHUNK, max(1, math.ceil(total / self.cpus)))
            return min(self.at_once, math.ceil(total / self.cpus)) if total else self.at_once
        size = max(1, int(TARGET_SECONDS / max(self.per_item, 1e-9)))
        if not self.trusted:  # a short chunk's time is mostly overhead: it overstates per_item,
            size = min(size, MAX_GROWTH * self.largest_measured)  # but timer noise could understate it
        if waves:  # whole waves: a part of one takes as long as all of it
            size = max(self.at_once, size - size % self.at_once)
        if total is not None:
            size = min(size, max(1, math.ceil(total / (self.cpus if waves else 4 * self.cpus))))
        return min(size, MAX_CHUNK)

