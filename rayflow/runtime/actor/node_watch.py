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
  scheduling class in the actor's core worker, so the later tasks of that class wait too, in
  this run and the actor's next ones.  So once this process has seen a node die
  (``NodeTable.died``: not one dead before its first read, nor one that ended gracefully),
  every work its executors send selects the other nodes (a Ray label selector on
  ``ray.io/node-id``: a new scheduling class, with lease slots of its own; the set only grows,
  so no earlier class comes back), and a watched work sent before the death was seen that has
  not reported its start UNSTARTED_GRACE seconds after is cancelled and lost the same way
  (a system error the engine retries, recorded as such), once per death.  Ray does not say
  where a queued task went, nor whether a start report was lost with the link: a work that
  was waiting for a live node's CPUs, or that ran on the dead node unseen, is lost too.

A node id is never reused, so a dead one stays dead.
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
# The DeathReason values (Ray's NodeDeathInfo.Reason) of a node that ended on purpose: stopped
# (EXPECTED_TERMINATION) or drained idle by the autoscaler (AUTOSCALER_DRAIN_IDLE).
GRACEFUL_DEATHS = frozenset({1, 4})
UNSTARTED_GRACE = 2.0  # seconds after a death was seen that a work sent before has to report its start


def read_ray_nodes() -> tuple[int, frozenset[str], frozenset[str]]:
    """(how many nodes are alive, the ids of the dead ones, those of them that ended gracefully:
    stopped, or drained by the autoscaler), from the GCS's node table."""
    import ray

    nodes = ray.nodes()
    dead = [n for n in nodes if not n.get("Alive")]
    return (sum(1 for n in nodes if n.get("Alive")), frozenset(n["NodeID"] for n in dead),
            frozenset(n["NodeID"] for n in dead if n.get("DeathReason") in GRACEFUL_DEATHS))


class NodeTable:
    """The cluster's node table as last read: one per actor process, shared by its runs.

    ``died``: the nodes this process saw die (alive, or unknown, at its first read; a graceful
    end excepted: a stopped raylet refuses a lease, it does not leave it hanging).  It only
    grows, so the selector built from it never repeats an earlier one (whose lease slots may be
    stuck); ``died_at``: when the last of them was first seen dead."""

    def __init__(self, read: Callable[[], tuple[int, frozenset[str], frozenset[str]]] = read_ray_nodes,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read, self.clock = read, clock
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._alive, self._dead = 1, frozenset()
        self._before: frozenset[str] | None = None  # dead at the first read: no news to this process
        self.died: frozenset[str] = frozenset()
        self.died_at = float("-inf")
        self.selector: dict[str, Any] = {}  # Ray options that keep a task off ``died``

    def _fresh(self, max_age: float) -> None:
        with self._lock:
            if self.clock() - self._at >= max_age:
                self._alive, self._dead, graceful = self._read()
                self._at = self.clock()
                if self._before is None:
                    self._before = self._dead
                news = self._dead - self._before - graceful - self.died
                if news:
                    self.died, self.died_at = self.died | news, self._at
                    self.selector = {"label_selector": {NODE_ID_LABEL: f"!in({','.join(sorted(self.died))})"}}

    def several(self) -> bool:
        """Whether the cluster has more than one live node."""
        self._fresh(COUNT_EVERY)
        return self._alive > 1

    def dead(self) -> frozenset[str]:
        self._fresh(CHECK_EVERY)
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
        self._unstarted: dict[int, float] = {}  # work id -> when it was sent
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._watching = False

    def track(self, work_id: int, *, forward: bool) -> bool:
        """Whether this work must report its start (and node): it is watched, or ``forward``."""
        if not self._watching and not self.table.several():  # (watching, it goes on: a node may be left)
            return forward
        with self._lock:
            self._watching = True
            self._on[work_id] = None
            self._unstarted[work_id] = self.table.clock()
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

    def check(self) -> tuple[dict[int, str], frozenset[int]]:
        """When due: (work id -> node, for the watched works on a node now dead; the works sent
        before the last death was seen that have not started UNSTARTED_GRACE seconds after it)."""
        now = self.table.clock()
        if now < self._next:
            return {}, frozenset()
        self._next = now + CHECK_EVERY
        dead = self.table.dead()
        death_at = self.table.died_at
        if not dead and not self.table.died:
            return {}, frozenset()
        with self._lock:
            lost = {work_id: node for work_id, node in self._on.items() if node in dead}
            unstarted = frozenset()
            if now >= death_at + UNSTARTED_GRACE:
                unstarted = frozenset(work_id for work_id, sent in self._unstarted.items() if sent < death_at)
            return lost, unstarted

    def selector(self) -> dict[str, Any]:
        """The Ray options that keep a work off the nodes seen dead (none while none is)."""
        return self.table.selector


def node_died(node: str) -> ErrorInfo:
    """The system error of a work lost with its node."""
    return describe_error(NodeDiedError(
        f"Ray declared node {node} dead (its host lost or cut off) while this work ran there: "
        "it was cancelled, to run again on a live node"), system=True)


def not_started(nodes: frozenset[str]) -> ErrorInfo:
    """The system error of a work that had not reported its start when ``nodes`` died."""
    return describe_error(NodeDiedError(
        f"this work had not reported its start {UNSTARTED_GRACE:g}s after Ray declared node(s) "
        f"{', '.join(sorted(nodes))} dead: it may be stuck there (or have run there, unseen); "
        "it was cancelled, to run again on a live node"), system=True)


def stop_quietly(cancel: Callable[..., Any], ref: Any) -> None:
    """Force-cancel a work whose node is gone; Ray may refuse (the task already failed): no matter."""
    try:
        cancel(ref, force=True)
    except Exception:  # noqa: BLE001 - the work is given up either way
        pass
