"""The dead-node watch's rules (runtime.actor.node_watch), with a stand-in node table and a fake
clock: which works are lost when a node dies, and when (tests/test_node_watch.py: on real Ray)."""

from __future__ import annotations

from waiting import ManualClock

from rayflow.runtime.actor.node_watch import CHECK_EVERY, UNSTARTED_GRACE, NodeTable, NodeWatch


class Table:
    """Three live nodes until told which are dead."""

    def __init__(self, dead: frozenset[str] = frozenset()) -> None:
        self.dead = dead

    def __call__(self) -> tuple[int, frozenset[str]]:
        return 3 - len(self.dead), self.dead


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
    assert watch.lost() == {}
    table.dead = frozenset({"b"})
    clock.advance(CHECK_EVERY)
    lost = watch.lost()
    assert list(lost) == [2] and lost[2].system and lost[2].type == "ray.exceptions.NodeDiedError"
    assert "while this work ran there" in lost[2].message


def test_a_work_not_started_when_a_node_dies_is_lost_after_its_grace_unless_it_starts():
    table = Table()
    watch, clock = _watch(table)
    for work_id in (1, 2, 3):
        watch.track(work_id, forward=False)
    watch.started(1, "a")
    table.dead = frozenset({"b"})  # 2 and 3 have not started: either may have been placed on b
    clock.advance(CHECK_EVERY)
    assert watch.lost() == {}
    watch.started(3, "a")  # 3 was queued on a live node: it starts within its grace
    clock.advance(UNSTARTED_GRACE)
    lost = watch.lost()
    assert list(lost) == [2]
    assert lost[2].system and "had not started" in lost[2].message and "node b" in lost[2].message
    clock.advance(CHECK_EVERY)
    assert watch.lost() == {}  # lost once: the executor cancels it and forgets it


def test_a_work_submitted_after_the_death_was_seen_is_not_suspected():
    table = Table()
    watch, clock = _watch(table)
    watch.track(1, forward=False)
    table.dead = frozenset({"b"})
    clock.advance(CHECK_EVERY)
    assert watch.lost() == {}
    watch.track(2, forward=False)  # Ray places no new work on a node it declared dead
    clock.advance(UNSTARTED_GRACE + CHECK_EVERY)
    assert list(watch.lost()) == [1]


def test_nodes_dead_before_the_first_work_are_no_news():
    table = Table(dead=frozenset({"old"}))  # a node lost long before this run
    watch, clock = _watch(table)
    watch.track(1, forward=False)
    for _ in range(3):
        clock.advance(UNSTARTED_GRACE + CHECK_EVERY)
        assert watch.lost() == {}


def test_a_finished_work_is_never_lost():
    table = Table()
    watch, clock = _watch(table)
    watch.track(1, forward=False)
    table.dead = frozenset({"b"})
    clock.advance(CHECK_EVERY)
    assert watch.lost() == {}
    watch.finished(1)
    clock.advance(UNSTARTED_GRACE)
    assert watch.lost() == {} and watch.next_check() is None


def test_on_one_node_nothing_is_watched():
    watch, clock = _watch(Table(dead=frozenset({"x", "y"})))  # one live node
    assert watch.track(1, forward=False) is False and watch.track(2, forward=True) is True
    assert watch.next_check() is None
