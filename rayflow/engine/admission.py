"""Limits by tag, on the orchestrator's side: a tagged task's work is submitted only once the
gate (``runtime.limits.TagGate``, or any object with its ``acquire``/``release``) has granted
it slots, so work waiting on a limit holds no worker and no CPU.

- A plain task's attempt takes one slot of each limit its tags name (the orchestrator asks
  in ``submit``; while none is free the task is PENDING ``waiting for limit 'NAME'``).
- A mapped task takes one slot per *running item*: each chunk asks for as many slots as it
  runs items at once (``TaskSpec.items_at_once``: 1, or ``concurrency`` of an async or
  threaded task, never more than the chunk's items), is granted between one and that many,
  and runs at most that many at once (``ChunkJob.slots``).  A chunk that gets none waits
  here, in order, per map, and is asked for again every GATE_RETRY_SECONDS; a map none of
  whose chunks runs while one waits shows as PENDING ``waiting for limit 'NAME'``.

The slots of a chunk come back when its work ends in any way (done, lost with its worker,
cancelled) and, for whatever the run did not see end, when the run ends
(``release_everything``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from typing import Any

GATE_RETRY_SECONDS = 0.25  # work waiting for a limit's slot asks again this often


def waiting_message(limit: str) -> str:
    """The PENDING state's message of a task (or map) waiting for a slot of ``limit``."""
    return f"{WAITING_FOR_LIMIT} {limit!r}"


WAITING_FOR_LIMIT = "waiting for limit"


def chunk_holder(key: str, work_id: int) -> str:
    """The gate's name for a chunk's slots (a plain task's are held under its task key)."""
    return f"{key}#{work_id}"


@dataclasses.dataclass
class _Waiting:
    spec: Any
    work: Any
    handles: list[Any]
    since: float


class ChunkAdmission:
    """Chunks of tagged maps between the map coordinator and the executor."""

    def __init__(self, gate: Any):
        self.gate = gate
        self.waiting: dict[str, deque[_Waiting]] = {}  # map key -> its chunks not admitted yet, in order
        self.running: Counter[str] = Counter()  # map key -> its admitted chunks not ended yet
        self.admitted: dict[int, str] = {}  # work id -> map key, of admitted chunks not ended yet
        self.waiting_for: dict[str, str] = {}  # map key -> the limit it waits on, while none of its chunks runs

    def offer(self, spec: Any, work: Any, handles: list[Any], now: float) -> None:
        self.waiting.setdefault(spec.key, deque()).append(_Waiting(spec, work, handles, now))

    def admit(self, now: float) -> tuple[list[tuple[Any, Any, list[Any]]], dict[str, str | None]]:
        """The chunks granted slots now, as (spec, work with its slots and seconds waited, handles),
        and the maps whose waiting changed: key -> the limit waited on, or None (one runs now)."""
        out: list[tuple[Any, Any, list[Any]]] = []
        changed: dict[str, str | None] = {}
        for key, queue in self.waiting.items():
            blocked = None
            while queue:
                entry = queue[0]
                job = entry.work.job
                want = max(1, min(entry.spec.items_at_once, len(job.indices) if job.indices is not None else job.size))
                granted, blocked = self.gate.acquire(chunk_holder(key, entry.work.work_id), entry.spec.options.tags, want)
                if blocked is not None:
                    break
                queue.popleft()
                job = dataclasses.replace(job, slots=granted, waited=now - entry.since)
                work = dataclasses.replace(entry.work, job=job)
                self.running[key] += 1
                self.admitted[work.work_id] = key
                out.append((entry.spec, work, entry.handles))
            label = blocked if blocked is not None and not self.running[key] else None
            if self.waiting_for.get(key) != label:
                changed[key] = label
                if label is None:
                    self.waiting_for.pop(key, None)
                else:
                    self.waiting_for[key] = label
        self.waiting = {k: q for k, q in self.waiting.items() if q}
        return out, changed

    @property
    def due(self) -> bool:
        return bool(self.waiting)

    def ended(self, work_id: int) -> bool:
        """A chunk's work ended or is cancelled: its slots go back.  True if it had been
        submitted (a cancel must reach the executor), False if it was still waiting here
        (it is dropped: nothing was submitted)."""
        key = self.admitted.pop(work_id, None)
        if key is not None:
            self.running[key] -= 1
            self.gate.release(chunk_holder(key, work_id))
            return True
        for queue in self.waiting.values():
            for entry in queue:
                if entry.work.work_id == work_id:
                    queue.remove(entry)
                    return False
        return True
