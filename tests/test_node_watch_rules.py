"""The dead-node watch's rules (runtime.actor.node_watch), with a stand-in node table and a fake
clock: which works are lost when a node dies (those that ran there, and those that had not
reported their start), and when
(tests/test_node_watch.py: on real Ray)."""

from __future__ import annotations

from waiting import ManualClock

from rayflow.runtime.actor.node_watch import (
    CHECK_EVERY, GRACEFUL_DEATHS, UNSTARTED_GRACE, NodeTable, NodeWatch, node_died, not_started,
)


class Table:
    """Three live nodes until told which are dead (``graceful``: those that were stopped)."""

    def __init__(self, dead: frozenset[str] = frozenset()) -> None:
        self.dead = dead
        self.graceful: frozenset[str] = frozenset()

    def __call__(self) -> tuple[int, frozenset[str], frozenset[str]]:
        return 3 - len(self.dead), self.dead, self.graceful


def _watch(table: Table) -> tuple[NodeWatch, ManualClock]:
    clock = ManualClock()
    return NodeWatch(NodeTable(read=table, clock=clock.now)), clock


def test_works_that_started_on_a_dead_node_are_lost_at_once():
    table = Table()
    watch, clock = _watch(table)
    for work_id in (1, 2):
        assert watch.track(work_id, forward=False)
    watch.started(1, "a")
    watch.started(2, "b")
    assert watch.check() == ({}, frozenset())
    table.dead = frozenset({"b"})
    clock.advance(CHECK_EVERY)
    assert watch.check() == ({2: "b"}, frozenset())
    error = node_died("b")
    assert error.system and error.type == "ray.exceptions.NodeDiedError" and "node b" in error.message


def test_a_work_sent_before_a_death_and_not_started_after_its_grace_is_lost_once():
    table = Table()
    watch, clock = _watch(table)
    for work_id in (1, 2, 3):
        watch.track(work_id, forward=False)
    watch.started(1, "a")
    assert watch.selector() == {}
    table.dead = frozenset({"b"})  # 2 and 3 have not started: either may be stuck on b
    clock.advance(CHECK_EVERY)
    assert watch.check() == ({}, frozenset())  # within their grace from the death
    assert watch.table.died == {"b"} and watch.selector() == {"label_selector": {"ray.io/node-id": "!in(b)"}}
    watch.started(3, "a")  # 3 was queued on a live node: it starts within its grace
    clock.advance(UNSTARTED_GRACE)
    assert watch.check() == ({}, {2})
    watch.finished(2)  # the executor cancels it: lost, the engine retries it (a new work)
    watch.track(4, forward=False)  # sent after the death was seen: off b, never suspect
    for _ in range(3):
        clock.advance(UNSTARTED_GRACE + CHECK_EVERY)
        assert watch.check() == ({}, frozenset())
    table.dead = frozenset({"b", "c"})  # a second death: what was sent before it is suspect again
    clock.advance(CHECK_EVERY)
    watch.check()
    assert watch.selector() == {"label_selector": {"ray.io/node-id": "!in(b,c)"}}
    clock.advance(UNSTARTED_GRACE)
    assert watch.check() == ({}, {4})
    error = not_started(watch.table.died)
    assert error.system and "had not reported its start" in error.message and "b, c" in error.message


def test_a_watch_goes_on_when_one_node_is_left():
    table = Table()
    watch, clock = _watch(table)
    watch.track(1, forward=False)
    table.dead = frozenset({"b", "c"})  # one live node left
    clock.advance(CHECK_EVERY)
    assert watch.check() == ({}, frozenset())  # the death seen
    clock.advance(UNSTARTED_GRACE)
    assert watch.check() == ({}, {1})
    watch.finished(1)
    assert watch.track(2, forward=False)  # its retry: watched still (a node may be left)
    clock.advance(CHECK_EVERY + UNSTARTED_GRACE)
    assert watch.check() == ({}, frozenset())


def test_nodes_dead_before_the_first_work_are_no_news():
    table = Table(dead=frozenset({"old"}))  # a node lost before this run's first work
    watch, clock = _watch(table)
    watch.track(1, forward=False)
    for _ in range(3):
        clock.advance(UNSTARTED_GRACE + CHECK_EVERY)
        assert watch.check() == ({}, frozenset())
    assert watch.selector() == {}


def _a_death_after_one_work() -> tuple[NodeWatch, ManualClock]:
    """A watch with work 1 sent, not started, then node b seen dead."""
    table = Table()
    watch, clock = _watch(table)
    watch.track(1, forward=False)
    table.dead = frozenset({"b"})
    clock.advance(CHECK_EVERY)
    assert watch.check() == ({}, frozenset())
    return watch, clock


def test_a_finished_work_is_never_lost():
    watch, clock = _a_death_after_one_work()
    watch.finished(1)
    clock.advance(UNSTARTED_GRACE)
    assert watch.check() == ({}, frozenset()) and watch.next_check() is None


def test_on_one_node_nothing_is_watched():
    watch, clock = _watch(Table(dead=frozenset({"x", "y"})))  # one live node
    assert watch.track(1, forward=False) is False and watch.track(2, forward=True) is True
    assert watch.next_check() is None


def test_the_dead_nodes_a_process_saw_die_are_avoided_by_its_later_runs_too():
    first, _ = _a_death_after_one_work()
    later = NodeWatch(first.table)  # the actor's next run: its works must not queue behind stuck leases
    assert later.selector() == {"label_selector": {"ray.io/node-id": "!in(b)"}}


def test_a_node_stopped_gracefully_is_not_avoided():
    table = Table()
    watch, clock = _watch(table)
    watch.track(1, forward=False)
    watch.started(1, "b")
    table.dead = table.graceful = frozenset({"b"})  # `ray stop`, or drained by the autoscaler
    clock.advance(CHECK_EVERY)
    assert watch.check() == ({1: "b"}, frozenset())  # what ran there is lost all the same
    assert watch.table.died == frozenset() and watch.selector() == {}


def test_the_graceful_death_reasons_are_rays():
    from ray.core.generated.common_pb2 import NodeDeathInfo  # (where Ray 2.60 keeps the enum)

    assert GRACEFUL_DEATHS == {NodeDeathInfo.Reason.Value(n) for n in ("EXPECTED_TERMINATION", "AUTOSCALER_DRAIN_IDLE")}
