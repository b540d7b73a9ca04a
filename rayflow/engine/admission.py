"""Limits by tag, on the orchestrator's side: a tagged task's work is submitted only once the
run's ``TagGate`` (here; it asks a ``LimitsClient``: the cluster's limits actor, or this
process's limits) has granted it slots, so work waiting on a limit holds no worker and no CPU.
``Gating`` is the orchestrator's part of it: the gate, the chunks waiting, when they ask again.

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
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

from rayflow.engine.limits_state import NAMES_SECONDS, lease_seconds

logger = logging.getLogger(__name__)

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


class LimitsClient(Protocol):
    """Where a run's gate asks for slots: the cluster's limits actor (runtime.limits.client.RayLimits)
    or this process's limits (engine.limits_state.InProcessLimits)."""

    def call(self, method: str, *args: Any) -> Any: ...

    def release_nowait(self, leases: list[str]) -> None: ...

    def exists(self) -> bool: ...


class TagGate:
    """The orchestrator's gate for one run: a tagged task's attempt, or a tagged map's chunk,
    takes slots of each limit its tags name before it is submitted, and gives them back when
    it stops running.  Its leases are renewed while held.  With no limits (``client.exists()``
    is False) nothing waits; a client that does not answer is warned about once, and tagged
    work then runs unlimited rather than wait forever."""

    def __init__(self, run_id: str, client: LimitsClient, clock: Callable[[], float] = time.monotonic):
        self.run_id = run_id
        self.client = client
        self.clock = clock
        self.held: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()
        self._warned = False
        self._names: frozenset[str] = frozenset()  # the limits there are, as last looked up
        self._names_until = -math.inf

    def acquire(self, key: str, tags: frozenset[str], want: int = 1) -> tuple[int, str | None]:
        """(slots granted, None), or (0, the limit waited on)."""
        if not tags & self._limit_names():  # tags that are only labels: no call to the limits
            return want, None
        try:
            leases, granted, waiting_for = self.client.call(
                "acquire_tags", sorted(tags), f"{self.run_id}/{key}", lease_seconds(), want
            )
        except Exception as exc:  # noqa: BLE001 - limits unreachable: run rather than wait forever
            self._warn(exc)
            return want, None
        if waiting_for is None and leases:
            with self._lock:
                self.held[key] = leases
                if self._renewer is None:
                    self._renewer = threading.Thread(target=self._renew, name=f"rayflow-leases-{self.run_id}", daemon=True)
                    self._renewer.start()
        return granted, waiting_for

    def _warn(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("rayflow: the limits actor did not answer (%s): tagged tasks run unlimited", exc)

    def _limit_names(self) -> frozenset[str]:
        """The names of the limits there are, looked up at most every NAMES_SECONDS: a limit
        set while a run goes on counts for its tasks within that time."""
        now = self.clock()
        if now >= self._names_until:
            self._names_until = now + NAMES_SECONDS
            try:
                self._names = frozenset(self.client.call("names")) if self.client.exists() else frozenset()
            except Exception as exc:  # noqa: BLE001 - limits unreachable: run rather than wait forever
                self._names = frozenset()
                self._warn(exc)
        return self._names

    def release(self, key: str) -> None:
        with self._lock:
            leases = self.held.pop(key, None)
        if not leases:
            return
        try:
            self.client.release_nowait(leases)
        except Exception:  # noqa: BLE001 - not renewed any more: they lapse on their own
            pass

    def release_everything(self) -> None:
        """The run is over: every slot back, and no more renewals."""
        self._stop.set()
        for key in list(self.held):
            self.release(key)

    def _renew(self) -> None:
        ttl = lease_seconds()
        while not self._stop.wait(ttl / 3):
            with self._lock:
                leases = [lease for held in self.held.values() for lease in held]
            if leases:
                try:
                    self.client.call("renew", leases, ttl)
                except Exception:  # noqa: BLE001 - tried again next time
                    pass


class Gating:
    """The orchestrator's limits by tag for one run (``gate`` None: tags limit nothing)."""

    def __init__(self, gate: TagGate | Any | None):
        self.gate = gate
        self.admission: ChunkAdmission | None = None
        self.due_at: float | None = None  # when chunks waiting for a slot ask again

    def task_waits_for(self, spec: Any) -> str | None:
        """A plain task about to be submitted takes a slot of each limit its tags name: None when
        it got them (or needs none), else the limit it waits on."""
        if self.gate is None or not spec.options.tags or spec.kind != "task":
            return None
        return self.gate.acquire(spec.key, spec.options.tags, 1)[1]

    def holds(self, spec: Any) -> bool:
        """Does this map's chunk wait here for slots (instead of going to the executor)?"""
        return self.gate is not None and bool(spec.options.tags)

    def offer(self, spec: Any, work: Any, handles: list[Any], now: float) -> None:
        if self.admission is None:
            self.admission = ChunkAdmission(self.gate)
        self.admission.offer(spec, work, handles, now)

    @property
    def waiting(self) -> bool:
        return self.admission is not None and self.admission.due

    def admit(self, now: float) -> tuple[list[tuple[Any, Any, list[Any]]], dict[str, str | None]]:
        """ChunkAdmission.admit, and when the chunks still waiting ask again."""
        admitted, changed = self.admission.admit(now) if self.admission is not None else ([], {})
        self.due_at = now + GATE_RETRY_SECONDS if self.waiting else None
        return admitted, changed

    def chunk_ended(self, work_id: int) -> bool:
        """A chunk's work ended or is cancelled (see ChunkAdmission.ended); True if it was submitted."""
        return self.admission is None or self.admission.ended(work_id)

    def stopped(self, key: str) -> None:
        """A task's attempt stopped running (or never started): its slots go back."""
        if self.gate is not None:
            self.gate.release(key)

    def cancel(self) -> None:
        self.due_at = None

    def release_everything(self) -> None:
        """The run is over: slots of attempts the run did not see end go back too."""
        if self.gate is not None:
            self.gate.release_everything()
