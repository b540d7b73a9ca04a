"""A map's outcomes: what each finished or lost work of a chunk means for its items.

``Outcomes`` is the part of ``MapRun`` (maps.run) that takes a chunk's summary (items final,
items to retry under the retry ledger of ``engine.policy``), settles a lost work, and reports
the map's counts, its items that did not succeed, and its final state.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import Any

from rayflow.engine import columns as C
from rayflow.engine.maps.feeds import MapFeed, StreamFeed
from rayflow.engine.policy import after_retry_signal, next_retry
from rayflow.engine.protocol import ChunkJob, ChunkSummary, WorkFacts
from rayflow.states import FAILED_TYPES, State, StateType

NAMES = tuple(t.value for t in C.CODES)  # a state code's name


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
    paused: set[int] | None = None  # items in chunk waiting for a decision (rf.pause): PAUSED, not RETRYING
    loops: dict[int, bytes] | None = None  # item in chunk -> where its retry resumes its loop (stopped mid-loop)
    partial: tuple | None = None  # its first run's part of a folded rf.reduce, as its summary gave it (a number)

    @property
    def final(self) -> bool:
        return self.started and self.running == 0 and not self.waiting and not self.queued

    @property
    def size(self) -> int:
        return self.stop - self.start


class Outcomes:
    """Outcome bookkeeping of a ``MapRun`` (which holds the fields it reads)."""

    def on_summary(self, summary: ChunkSummary, handle: Any, now: float) -> WorkFacts:
        """Take a chunk's summary: its items final, or waiting to run again; what it did, as facts."""
        chunk = self.by_id[summary.chunk]
        if summary.size < chunk.size and summary.indices is None and not summary.loaded and self.sizer.budgeted:
            self.cut_short(chunk, summary.size)  # stopped at its budget (ChunkJob.budget): the rest runs later
        chunk.running -= 1
        self.in_flight -= 1
        chunk.handles.append(handle)
        if summary.indices is None and not summary.loaded:  # a first run: retries and loads measure little
            self.sizer.measure(summary.size, summary.finished_at - summary.started_at - summary.overhead)
            chunk.partial = summary.partial
        chunk.flat_count += summary.flat_count
        self.cached += summary.cached
        counts = dict(summary.counts)
        options = self.options
        spent = chunk.spent if chunk.spent is not None else {}
        again: set[int] = set()  # items sent to run again
        for item, code, retryable, attempt in summary.failed:  # the ledger a plain task keeps (policy.py)
            delay = next_retry(options, spent.get(item, 0), retryable=retryable)
            if delay is not None:
                spent[item] = spent.get(item, 0) + 1
                chunk.waiting[item] = (now + delay, attempt + 1)
                counts[code] -= 1
                again.add(item)
            else:  # final: its index is kept (failures only, never successful items)
                if chunk.outcomes is None:
                    chunk.outcomes = {}
                chunk.outcomes[item] = code
        for item, delay, attempt in summary.retry:  # rf.Retry: retried even past `retries`, spends none
            chunk.waiting[item] = (now + after_retry_signal(options, spent.get(item, 0), delay), attempt + 1)
            counts[C.RETRYING] -= 1
            again.add(item)
        chunk.spent = spent if spent and not chunk.final else None  # a final chunk's items retry no more
        if chunk.loops or summary.loops:
            _keep_loops(chunk, summary, again)
        for code, n in counts.items():
            if n:
                chunk.counts[code] = chunk.counts.get(code, 0) + n
        if summary.errors:
            chunk.errors = (chunk.errors + [(chunk.start + i, text) for i, text in summary.errors])[-20:]
        tally = {C.CODES[code].value: n for code, n in counts.items() if n}
        if summary.cached:  # cached items are SUCCESS to the engine, told apart in its facts
            tally["SUCCESS"] = tally.get("SUCCESS", 0) - summary.cached
            tally["CACHED"] = summary.cached
        paused, unpaused = self._paused(chunk, summary.indices, {item for item, *_ in summary.paused})
        waiting = len(again) - len(paused) - (len(summary.indices) - unpaused if summary.indices is not None else 0)
        if waiting:
            tally["RETRYING"] = waiting
        if len(paused) != unpaused:  # items waiting for a person: PAUSED while they wait (their run again held)
            tally["PAUSED"] = len(paused) - unpaused
        rows = _rows(chunk.start, summary, again, paused)
        facts = self._settled(chunk, WorkFacts(chunk.start, chunk.stop, tally, len(again), rows))
        if chunk.final and isinstance(self.leader, StreamFeed):
            self._release_segment(chunk)
        self._check_done()
        return facts

    @staticmethod
    def _paused(chunk: Chunk, ran: Any, paused: set[int]) -> tuple[set[int], int]:
        """Items of ``chunk`` that paused now, and how many of those ``ran`` (a retry's) were paused
        before: they were counted PAUSED, not RETRYING, while they waited for their decision."""
        before = chunk.paused or set()
        unpaused = 0
        if ran is not None and before:
            unpaused = sum(1 for i in ran if i in before)
            before = before.difference(ran)
        chunk.paused = (before | paused) or None
        return paused, unpaused

    def _settled(self, chunk: Chunk, facts: WorkFacts) -> WorkFacts:
        """Add a work's facts to the map's tally: the one count of its items (``counts``, ``progress``,
        and the history, which sums the same facts)."""
        for state, n in facts.counts.items():
            self.tally[state] = self.tally.get(state, 0) + n
        self._version += 1
        return facts

    def _release_segment(self, chunk: Chunk) -> None:
        """Drop the stream segment ``chunk`` came from once every chunk of it is final (a split
        chunk's halves are chunks of the same segment, and their retries need its items)."""
        for i, seg in enumerate(self.leader.segments()):
            if seg.start <= chunk.start < seg.stop:
                if all(c.final for c in self.chunks if seg.start <= c.start < seg.stop):
                    self.leader.release(i)
                return
        raise LookupError(chunk.start)

    def release(self, job: ChunkJob) -> None:
        """A work ended without a result."""
        self.by_id[job.chunk].running -= 1
        self.in_flight -= 1

    def settle_lost(self, job: ChunkJob, handle: Any, message: str, error_type: str | None = None) -> WorkFacts:
        """Record a work whose system retries are spent: its items failed (``handle`` holds that)."""
        chunk = self.by_id[job.chunk]
        chunk.handles.append(handle)
        items = job.indices if job.indices is not None else range(chunk.size)
        n = len(items)
        chunk.counts[C.FAILED] = chunk.counts.get(C.FAILED, 0) + n
        if job.indices is None:
            chunk.lost = True
        else:
            chunk.outcomes = {**(chunk.outcomes or {}), **dict.fromkeys(job.indices, C.FAILED)}
            if chunk.loops:  # final: they resume no loop
                chunk.loops = {i: state for i, state in chunk.loops.items() if i not in job.indices} or None
        first = job.start + (job.indices[0] if job.indices else 0)
        chunk.errors = (chunk.errors + [(first, message)])[-20:]
        tally = {"FAILED": n}
        if job.indices is not None:  # a retry's items, counted RETRYING (or PAUSED) until now
            _, unpaused = self._paused(chunk, job.indices, set())
            tally.update({"RETRYING": unpaused - n, **({"PAUSED": -unpaused} if unpaused else {})})
        attempts = job.attempts or (1,) * n
        rows = tuple((chunk.start + i, "FAILED", a, error_type, message, None) for i, a in zip(items, attempts))
        facts = self._settled(chunk, WorkFacts(chunk.start, chunk.stop, tally, 0, rows))
        self._check_done()
        return facts

    # -- reporting -----------------------------------------------------------

    def counts(self) -> dict[StateType, int]:
        """Final items per state, from the tally of the map's facts (cached items counted SUCCESS)."""
        out: dict[StateType, int] = {}
        for state, n in self.tally.items():
            if n and state not in ("RETRYING", "PAUSED"):
                kind = StateType.SUCCESS if state == "CACHED" else StateType(state)
                out[kind] = out.get(kind, 0) + n
        return out

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
        first = next((e for c in self.chunks for e in c.errors if _ended_failed(c, e[0])), None)
        if first is not None and failed:
            summary += f"; first error: item {first[0]}: {first[1]}"
        if total == 0 or ok / total >= self.options.min_success_ratio:
            return State(type=StateType.MAPPED, message=summary, **timing)
        return State(type=StateType.FAILED, message=summary, **timing)


def _rows(start: int, summary: ChunkSummary, again: set[int], paused: set[int] = frozenset()) -> tuple[tuple, ...]:
    """The work's item rows: (map index, state name, attempts, error type, message, traceback); a
    retry's items without an error come as arrays (``ran_again``), made rows here, once.  An item
    that waits for a person (``paused``) reads PAUSED with the pause's message (no error type)."""

    def name(item: int, code: int) -> str:
        return ("PAUSED" if item in paused else "RETRYING") if item in again else NAMES[code]

    if summary.ran_again is None:
        return tuple(
            (start + item, name(item, code), attempt, None if item in paused else kind, message, trace)
            for item, code, attempt, kind, message, trace in summary.items
        )
    codes, attempts = summary.ran_again
    notes = {item: (None if item in paused else kind, *rest) for item, _, _, kind, *rest in summary.items}
    none = (None, None, None)
    if not notes and not again:
        return tuple(
            (start + item, NAMES[code], attempt, None, None, None)
            for item, code, attempt in zip(summary.indices, codes.tolist(), attempts.tolist())
        )
    return tuple(
        (start + item, name(item, code), attempt, *notes.get(item, none))
        for item, code, attempt in zip(summary.indices, codes.tolist(), attempts.tolist())
    )


def _keep_loops(chunk: Chunk, summary: ChunkSummary, again: set[int]) -> None:
    """Where each item sent to run again resumes its loop (the summary's word: an item that
    stopped mid-loop; engine.worker.looping), so every work that runs it again carries it
    (``MapRun._job``); the items that ran in this work and are final, or resume no loop,
    keep none.  Only items that looped and did not succeed are ever held."""
    ran = range(chunk.size) if summary.indices is None else set(summary.indices)
    kept = {i: state for i, state in (chunk.loops or {}).items() if i not in ran}
    for i, state in (summary.loops or {}).items():
        if i in again:
            kept[i] = state
    chunk.loops = kept or None


def _ended_failed(chunk: Chunk, item: int) -> bool:
    """Whether the map's item ``item`` of ``chunk`` ended failed (its error is then worth naming;
    an item that failed and then succeeded on a retry is not the map's error)."""
    return chunk.lost or bool(chunk.outcomes) and item - chunk.start in chunk.outcomes
