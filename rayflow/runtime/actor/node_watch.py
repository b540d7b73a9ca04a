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

- A work that has not started may be stuck on the dead node: Ray places a queued task by its
  raylet's view of the cluster, which can still hold the dead node for a while, and a lease
  asked of a node cut off is never answered nor failed (ray-project/ray#63405: the task stays
  PENDING_NODE_ASSIGNMENT for good).  Worse, the stuck leases hold the lease slots of their
  scheduling class in the actor's core worker, so the later tasks of that class wait too.  So
  once a node is seen dead (``died``), every work the executor sends selects the nodes that are
  not it (a Ray label selector on ``ray.io/node-id``: a new scheduling class, with slots of
  its own), and a watched work sent before then that has not reported its start
  UNSTARTED_GRACE seconds after the death was seen is sent again that way: the executor
  cancels its Ray task and submits the same work (same id and attempt; it never ran, so no
  retry is spent and nothing is recorded).  Ray does not say where a queued task went, so a
  work that merely waited for a live node's CPUs is sent again too, once.

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
NODE_ID_LABEL = "ray.io/node-id"  # every node's own label: its node id
UNSTARTED_GRACE = 2.0  # seconds after a death was seen that a work sent before has to report its start


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
        self._unstarted: dict[int, tuple[float, Any]] = {}  # work id -> (sent at, what to send again)
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._known_dead: frozenset[str] | None = None  # dead when the first work was tracked
        self.died: frozenset[str] = frozenset()  # nodes seen dead since: works select the others
        self._death_at = float("-inf")  # when a node was last first seen dead

    def track(self, work_id: int, *, forward: bool, resend: Any = None) -> bool:
        """Whether this work must report its start (and node): it is watched, or ``forward``.
        ``resend``: what ``check`` hands back for a work to send again (sent again: the same id)."""
        if self._known_dead is None and not self.table.several():  # (watching, it goes on: a node may be left)
            return forward
        with self._lock:
            if self._known_dead is None:
                self._known_dead = self.table.known_dead()
            self._on[work_id] = None
            self._unstarted[work_id] = (self.table.clock(), resend)
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

    def check(self) -> tuple[dict[int, str], dict[int, Any]]:
        """When due: (work id -> node, for the watched works on a node now dead; work id -> its
        ``resend``, for the works to send again: sent before a death was seen, and not started
        UNSTARTED_GRACE seconds after)."""
        now = self.table.clock()
        if now < self._next:
            return {}, {}
        self._next = now + CHECK_EVERY
        dead = self.table.dead()
        if not dead and not self.died:
            return {}, {}
        with self._lock:
            news = dead - (self._known_dead or frozenset()) - self.died
            if news:
                self.died, self._death_at = self.died | news, now
            lost = {work_id: node for work_id, node in self._on.items() if node in dead}
            stuck = {}
            if now >= self._death_at + UNSTARTED_GRACE:
                stuck = {work_id: resend for work_id, (sent, resend) in self._unstarted.items() if sent < self._death_at}
            return lost, stuck

    def selector(self) -> dict[str, Any]:
        """The Ray options that keep a work off the nodes seen dead (none while none is)."""
        if not self.died:
            return {}
        return {"label_selector": {NODE_ID_LABEL: f"!in({','.join(sorted(self.died))})"}}


def node_died(node: str) -> ErrorInfo:
    """The system error of a work lost with its node."""
    return describe_error(NodeDiedError(
        f"Ray declared node {node} dead (its host lost or cut off) while this work ran there: "
        "it was cancelled, to run again on a live node"), system=True)


def stop_quietly(cancel: Callable[..., Any], ref: Any) -> None:
    """Force-cancel a work whose node is gone; Ray may refuse (the task already failed): no matter."""
    try:
        cancel(ref, force=True)
    except Exception:  # noqa: BLE001 - the work is given up either way
        pass
