"""The fused stages in flight (core.fusion), as the map coordinator tracks them.

A chunk of map f submitted with g fused behind it carries g's stage: a work id chosen at
submit time, for g's chunk over the same items.  g's MapRun makes that chunk only once f's
chunks up to it are final (its feed's segments), so the stage is *expected* there: when g
cuts the chunk, it is *adopted* (the coordinator tracks it as a work in flight, without
submitting it) instead of submitted.  The stage's completion may come before adoption (an
earlier chunk of f still runs): it is *held* until then, and replayed.  A stage that did
not run, or whose previous stage's chunk did not settle, is *dropped*: g then cuts and
submits that chunk as usual.
"""

from __future__ import annotations

from typing import Any


class StageBook:
    def __init__(self) -> None:
        self.expect: dict[tuple[str, int], int] = {}  # (map key, chunk start) -> the stage's work id, not adopted
        self.stages: dict[int, tuple[str, int, int | None]] = {}  # stage work id -> (map key, start, stop or None: any)
        self.held: dict[int, tuple[Any, Any, Any]] = {}  # stage work id -> (work, report, handle) come before adoption
        self.next: dict[int, int] = {}  # a work id -> the work id of the stage fused behind it
        self.void: set[int] = set()  # stages that ran on a chunk that did not settle: their results are not taken

    def add(self, previous: int, work_id: int, key: str, start: int, stop: int | None) -> None:
        self.expect[(key, start)] = work_id
        self.stages[work_id] = (key, start, stop)
        self.next[previous] = work_id

    def expected(self, key: str, start: int, stop: int) -> int | None:
        """The stage that ran g's chunk [start, stop), taken off the expected ones (None: none did)."""
        work_id = self.expect.get((key, start))
        if work_id is None or self.stages[work_id][2] not in (stop, None):  # None: through a flatten, any size
            return None
        del self.expect[(key, start)]
        return work_id

    def adopted(self, work_id: int) -> tuple[Any, Any, Any] | None:
        """g adopted the stage: its completion if it came already (replay it), else None (it comes)."""
        held = self.held.pop(work_id, None)
        if held is not None:
            del self.stages[work_id]
        return held

    def receive(self, work: Any, report: Any, handle: Any, in_flight: bool) -> bool:
        """A stage's completion came: True when it is to be taken now (adopted: ``in_flight``),
        False when held for adoption or dropped.  Any other work: True."""
        entry = self.stages.get(work.work_id)
        if entry is None:
            if work.work_id in self.void:
                self.void.discard(work.work_id)
                return False
            return True
        if self.expect.get(entry[:2]) == work.work_id:
            self.held[work.work_id] = (work, report, handle)
            return False
        del self.stages[work.work_id]
        return in_flight

    def settled(self, work_id: int, fed: bool, final: bool) -> None:
        """The work ``work_id`` finished: the stage behind it stands if it ran (``fed``) on a
        chunk that is ``final``, else it and every stage after it are dropped.  One that ran
        on a chunk the orchestrator still retries is void: its result is not taken."""
        after = self.next.pop(work_id, None)
        if after is None or (fed and final):
            return
        while after is not None:
            entry = self.stages.pop(after, None)
            if entry is not None and self.expect.get(entry[:2]) == after:
                del self.expect[entry[:2]]
            if fed and self.held.pop(after, None) is None:
                self.void.add(after)  # its completion is still to come
            after = self.next.pop(after, None)

    def clear(self) -> None:
        self.expect.clear()
        self.stages.clear()
        self.held.clear()
        self.next.clear()
        self.void.clear()
