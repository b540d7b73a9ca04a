"""NodeWatch: works in flight on a node Ray declared dead fail as system errors (in the FlowRunActor).

Ray declares a node dead once its health checks fail (``RAY_health_check_*``; about 30 s by
default), but Ray 2.60 does not fail a task it had pushed to a worker on that node while the
connection to it hangs: a host cut off for good would hold its works, and the run, forever.  So
rayflow fails them itself:

- On a cluster of more than one node (the node table, read at most every COUNT_EVERY seconds
  while works are submitted), each work's worker tells the actor which node it started on, in
  the start report that tasks with a timeout send anyway (``attempt_started``: one actor call
  per work, no more).  On one node nothing is reported and nothing is watched: a node's death
  there is the actor's own.
- While works whose node is known are in flight, the executor reads the cluster's node table
  (``ray.nodes()``, one GCS call, shared by every run of the actor) at most every CHECK_EVERY
  seconds; the works on a node now DEAD are force-cancelled and end as system errors
  (``ray.exceptions.NodeDiedError``), which the engine retries on the live nodes under the
  task's ``system_retries`` (a map's chunk: its items again, split if it keeps dying), as it
  does a worker that died.

- A work that has not reported its start when a node is first seen dead may have been placed
  there, queued behind that node's CPUs, or its start report lost with the link: Ray does not
  say where a queued task is placed, and does not fail it either.  Each such work is given
  UNSTARTED_GRACE seconds to report its start (a work queued on a live node, or one whose
  report is on its way, does); one that does not is cancelled and lost the same way.  The
  price of not knowing: a work that merely waited for a live node's CPUs then runs again from
  the back of the queue, as one more system retry.

A node id is never reused, so a dead one stays dead; the nodes already dead when a watch first
tracks a work are no news to it (they died before its works were placed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ray.exceptions import NodeDiedError

from rayflow.engine.protocol import describe_error
from rayflow.states import ErrorInfo

CHECK_EVERY = 1.0  # seconds between reads of the node table while watched works are in flight
COUNT_EVERY = 10.0  # seconds between reads that only say whether the cluster has several nodes
UNSTARTED_GRACE = 2.0  # seconds a work not started when a node died has to report its start


def read_ray_nodes() -> tuple[int, frozenset[str]]:
    """(how many nodes are alive, the ids of the dead ones), from the GCS's node table."""
    import ray

    nodes = ray.nodes()
    return sum(1 for n in nodes if n.get("Alive")), frozenset(n["NodeID"] for n in nodes if not n.get("Alive"))


class NodeTable:
    """The cluster's node table as last read: one per actor process, shared by its runs."""

    def __init__(self, read: Callable[[], tuple[int, frozenset[str]]] = read_ray_nodes,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read, self.clock = read, clock
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._alive, self._dead = 1, frozenset()

    def _fresh(self, max_age: float) -> None:
        with self._lock:
            if self.clock() - self._at >= max_age:
                self._alive, self._dead = self._read()
                self._at = self.clock()

    def several(self) -> bool:
        """Whether the cluster has more than one live node."""
        self._fresh(COUNT_EVERY)
        return self._alive > 1

    def dead(self) -> frozenset[str]:
        self._fresh(CHECK_EVERY)
        return self._dead

    def known_dead(self) -> frozenset[str]:
        """The dead nodes as last read (no read)."""
        return self._dead


_shared: NodeTable | None = None


def shared_table() -> NodeTable:
    global _shared
    if _shared is None:
        _shared = NodeTable()
    return _shared


class NodeWatch:
    """One executor's works and the nodes they started on."""

    def __init__(self, table: NodeTable | None = None) -> None:
        self.table = table or shared_table()
        self._on: dict[int, str | None] = {}  # work id -> its node (None: not heard of yet)
        self._forward: set[int] = set()  # works whose start the orchestrator wants too
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._seen_dead: frozenset[str] | None = None  # dead nodes already acted on (None: no work yet)
        self._unstarted: dict[int, tuple[float, str]] = {}  # work id -> (start deadline, the node that died)

    def track(self, work_id: int, *, forward: bool) -> bool:
        """Whether this work must report its start (and node): it is watched, or ``forward``."""
        if not self.table.several():
            return forward
        with self._lock:
            if self._seen_dead is None:
                self._seen_dead = self.table.known_dead()
            self._on[work_id] = None
            if forward:
                self._forward.add(work_id)
        return True

    def started(self, work_id: int, node: str | None) -> bool:
        """A work started on ``node``; True when the orchestrator wants to hear of it too."""
        with self._lock:
            if work_id not in self._on:
                return True  # not watched: it reported because its start is wanted
            if node is not None:
                self._on[work_id] = node
                self._unstarted.pop(work_id, None)
            return work_id in self._forward  # (rf.Loop reports each iteration's start, without a node)

    def finished(self, work_id: int) -> None:
        if work_id not in self._on:  # not watched (one node): no lock taken; only track() adds
            return
        with self._lock:
            self._on.pop(work_id, None)
            self._forward.discard(work_id)
            self._unstarted.pop(work_id, None)

    def next_check(self) -> float | None:
        """When the node table must be read next (clock of the table); None: nothing watched."""
        return self._next if self._on else None

    def lost(self) -> dict[int, ErrorInfo]:
        """Work id -> its system error, for the watched works on a node now dead, and those not
        started UNSTARTED_GRACE seconds after a node died (read when due)."""
        now = self.table.clock()
        if now < self._next:
            return {}
        self._next = now + CHECK_EVERY
        dead = self.table.dead()
        if not dead and not self._unstarted:
            return {}
        with self._lock:
            news = dead - (self._seen_dead or frozenset())
            if news:
                self._seen_dead = dead
                for work_id, node in self._on.items():
                    if node is None:
                        self._unstarted.setdefault(work_id, (now + UNSTARTED_GRACE, min(news)))
            out = {work_id: node_died(node) for work_id, node in self._on.items() if node in dead}
            for work_id, (deadline, node) in list(self._unstarted.items()):
                if deadline <= now:
                    del self._unstarted[work_id]
                    out[work_id] = node_died(node, started=False)
            return out


def node_died(node: str, *, started: bool = True) -> ErrorInfo:
    """The system error of a work lost with its node (``started``), or that may have been placed
    on it and did not start."""
    if started:
        where = "while this work ran there"
    else:
        where = f"and this work had not started {UNSTARTED_GRACE:g}s later (it may have been placed there)"
    return describe_error(NodeDiedError(
        f"Ray declared node {node} dead (its host lost or cut off) {where}: "
        "it was cancelled, to run again on a live node"), system=True)


def stop_quietly(cancel: Callable[..., Any], ref: Any) -> None:
    """Force-cancel a work whose node is gone; Ray may refuse (the task already failed): no matter."""
    try:
        cancel(ref, force=True)
    except Exception:  # noqa: BLE001 - the work is given up either way
        pass
