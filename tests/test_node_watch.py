"""The dead-node watch (runtime.actor.node_watch) on real Ray: works on a node the node table
says is dead are force-cancelled and retried as system errors.  A one-node session Ray cannot
lose a node, so the table is read from a stand-in that says there are two nodes and, once, that
a node is dead: the one the test says the works started on, whose retries then select the
others, the real one (tests/test_netbed.py loses a real host)."""

from __future__ import annotations

import asyncio
import pathlib
import threading
import time

import pytest
import ray
from waiting import alive, wait_for

import rayflow as rf
from rayflow.engine.orchestrator import Orchestrator
from rayflow.engine.plan import compile_plan
from rayflow.runtime.actor import node_watch
from rayflow.runtime.actor.executor import RayExecutor
from rayflow.states import StateType as T

pytestmark = pytest.mark.usefixtures("ray_session")


def _hang_the_first_time(root: str, x: int) -> int:
    marker = pathlib.Path(root) / f"ran-{x}"
    first = not marker.exists()
    with marker.open("a") as f:
        f.write(f"{__import__('os').getpid()}\n")
    if first:
        time.sleep(120)  # held, as by a host cut off for good: only the watch ends it
    return x * x


@rf.task(retries=0)
def plain(root: str, x: int) -> int:
    return _hang_the_first_time(root, x)


@rf.task(retries=0, chunk_size=1)
def item(x: int, root: str) -> int:
    return _hang_the_first_time(root, x)


@ray.remote(num_cpus=0)
class Starts:
    """Stands in for the FlowRunActor: the start reports, for the test to hand to the executor."""

    def __init__(self) -> None:
        self.seen: list = []
        self.came = asyncio.Event()

    async def attempt_started(self, run_id: str, work_id: int, at: float, node: str | None = None, sending: int = 0) -> None:
        self.seen.append((work_id, at, node))
        self.came.set()

    async def take(self, timeout: float) -> list:
        """The reports since the last take, waiting up to ``timeout`` for one."""
        try:
            await asyncio.wait_for(self.came.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        self.came.clear()
        out, self.seen = self.seen, []
        return out


STAND_IN = "a-second-node"  # the node the first test's works are said to run on


class OnceDead:
    """A node table of two live nodes that says once, when told, that ``node`` is dead."""

    def __init__(self) -> None:
        self.node: str | None = None
        self.reads_dead = 0

    def __call__(self) -> tuple[int, frozenset[str], frozenset[str]]:
        node, self.node = self.node, None
        self.reads_dead += node is not None
        return 2, frozenset({node} if node else ()), frozenset()


def test_works_on_a_node_declared_dead_are_cancelled_and_run_again(tmp_path):
    root = str(tmp_path)

    @rf.flow
    def held():
        return [plain(root, 1), item.map([2], root=rf.unmapped(root))]

    table = OnceDead()
    starts = Starts.remote()
    executor = RayExecutor("watched", notifier=starts, nodes=node_watch.NodeTable(read=table))
    nodes: dict[int, str] = {}
    done = threading.Event()

    def forward_starts() -> None:  # the FlowRunActor's attempt_started, for this test's executor
        while not done.is_set():
            for work_id, at, node in ray.get(starts.take.remote(0.2)):
                nodes[work_id] = node
                executor.notify_started(work_id, at, STAND_IN)  # as if on a second node (to be lost)

    forwarder = threading.Thread(target=forward_starts, daemon=True)
    forwarder.start()
    orchestrator = Orchestrator(compile_plan(held.graph, held), executor, "watched")
    ended: dict = {}
    running = threading.Thread(target=lambda: ended.update(summary=orchestrator.run()), daemon=True)
    running.start()
    try:
        wait_for(lambda: len(nodes) >= 2 and all((tmp_path / f"ran-{x}").exists() for x in (1, 2)), timeout=60,
                 what="both works started and reported their node")
        first_pids = [int((tmp_path / f"ran-{x}").read_text().split()[0]) for x in (1, 2)]
        table.node = STAND_IN  # the node both "started on", declared dead: their retries run on the real one
        running.join(60)  # without the watch, the works are held 120 s
        assert not running.is_alive(), "the run waited on works of a dead node"
    finally:
        done.set()
    summary = ended["summary"]
    assert table.reads_dead == 1 and set(nodes.values()) == {ray.get_runtime_context().get_node_id()}
    assert executor.watch.selector() == {"label_selector": {"ray.io/node-id": f"!in({STAND_IN})"}}
    assert executor._remotes and executor._remotes_died == {STAND_IN}  # the retries' remotes were made to avoid it
    assert summary.state.type is T.SUCCESS, summary.state
    assert summary.task_states["plain"].type is T.SUCCESS and summary.task_states["item"].type is T.MAPPED
    lost = [s.error for s in summary.history["plain"] if s.type is T.RETRYING]  # a system retry, not the user's
    assert len(lost) == 1 and lost[0].system and lost[0].type == "ray.exceptions.NodeDiedError", lost
    assert summary.history["plain"][-1].attempt == 2
    for x in (1, 2):  # each ran twice: held, then again
        assert len((tmp_path / f"ran-{x}").read_text().split()) == 2
    for pid in first_pids:  # force-cancelled: the held workers' processes are gone
        wait_for(lambda: not alive(pid), timeout=20, what=f"worker {pid} killed")


@rf.task(retries=0)
def queued(x: int) -> int:
    return x + 1


@ray.remote(num_cpus=2)
def _hold_the_cpus(marker: str) -> None:
    pathlib.Path(marker).touch()
    time.sleep(120)


def test_a_work_not_started_when_a_node_dies_is_cancelled_and_run_again(tmp_path):
    """Ray does not say where a queued work was placed, and a lease asked of a node cut off is
    never answered: one that has not started its grace after a node died is cancelled and lost
    as a system error (node_watch.UNSTARTED_GRACE); its retry selects the other nodes."""

    @rf.flow
    def one():
        return queued(1)

    blocker = _hold_the_cpus.remote(str(tmp_path / "held"))  # the session Ray's 2 CPUs: the work queues
    wait_for(lambda: (tmp_path / "held").exists(), timeout=60, what="the CPUs held")
    table = OnceDead()
    executor = RayExecutor("queued", notifier=Starts.remote(), nodes=node_watch.NodeTable(read=table))
    orchestrator = Orchestrator(compile_plan(one.graph, one), executor, "queued")
    ended: dict = {}
    running = threading.Thread(target=lambda: ended.update(summary=orchestrator.run()), daemon=True)
    running.start()
    try:
        wait_for(lambda: executor._pending, timeout=30, what="the work submitted")
        (first_ref, (first, _)), = list(executor._pending.items())
        table.node = STAND_IN  # the work never reports a start: it may be stuck there
        wait_for(lambda: executor._pending and first_ref not in executor._pending, timeout=30,
                 what="the unstarted work lost and run again")
        (retry, _), = list(executor._pending.values())
        assert retry.attempt == 2 and retry.work_id != first.work_id
        with pytest.raises(ray.exceptions.TaskCancelledError):  # the first is cancelled: it cannot run twice
            ray.get(first_ref, timeout=30)
    finally:
        ray.cancel(blocker, force=True)
    running.join(60)
    assert not running.is_alive()
    summary = ended["summary"]
    assert summary.state.type is T.SUCCESS and summary.task_states["queued"].type is T.SUCCESS, summary.state
    lost = [s.error for s in summary.history["queued"] if s.type is T.RETRYING]  # a system retry, recorded
    assert len(lost) == 1 and lost[0].system and "had not reported its start" in lost[0].message, lost
    assert executor.watch.selector() == {"label_selector": {"ray.io/node-id": f"!in({STAND_IN})"}}
