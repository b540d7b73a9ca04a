"""The named limits' state (engine.limits_state.LimitsState) and the limits actor's class, in
this process: leases that lapse, token buckets, queued holders that give up, all on a fake
clock (no test waits for them); definitions kept in a real SQLite history; in-process limits
without Ray."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import time

import pytest

import rayflow as rf
from rayflow.engine import limits_state
from rayflow.engine.limits_state import WAITER_SECONDS, InProcessLimits, LimitsState
from rayflow.runtime.limits import client
from rayflow.runtime.limits.actor import LimitsActor
from rayflow.store import RunStore
from rayflow.store import limits as kept


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_leases_expire_and_bad_values_are_refused():
    clock = FakeClock()
    state = LimitsState(clock)
    state.set("db", 1)
    first = state.acquire("db", 1, "a", ttl=0.2)
    assert first is not None and state.acquire("db", 1, "b", ttl=0.2) is None
    clock.now += 0.15
    assert state.renew([first], ttl=0.2) == []  # renewed in time: good for 0.2 s from now
    clock.now += 0.15
    assert state.acquire("db", 1, "b", ttl=0.2) is None  # still held (0.3 s after it was taken)
    clock.now += 0.1  # not renewed for 0.25 s (its lease was for 0.2 s): its holder is taken for dead
    assert state.acquire("db", 1, "b", ttl=5) is not None and state.get("db")["in_use"] == 1
    assert state.renew([first], ttl=5) == [first]  # the first holder learns it lost its slot
    with pytest.raises(rf.LimitError, match="can never be held"):
        state.acquire("db", 2, "c", ttl=5)
    for bad in (-1, 1.5, True):
        with pytest.raises(rf.LimitError, match="whole number"):
            state.set("db", bad)
    with pytest.raises(rf.LimitError, match="name"):
        state.set("no spaces", 1)
    with pytest.raises(rf.LimitError, match="no limit named 'ghost'"):
        state.acquire("ghost", 1, "a", ttl=1)


def test_limit_definitions_round_trip_through_the_history_and_renewals_take_their_slots_again(tmp_path):
    """The actor's class in this process, on a real SQLite file: what one instance set, the next
    (a restarted actor: Ray runs __init__ again with the same history) loads."""
    first = LimitsActor(str(tmp_path))
    first.set("db", 5)
    first.set("api", 10, per_second=2.5)
    first.set("gone", 1)
    assert first.remove("gone") and not first.remove("never")
    assert kept.LimitStore(RunStore(tmp_path)).load() == {"api": (10, 2.5), "db": (5, None)}
    assert stat.S_IMODE((tmp_path / "history.db").stat().st_mode) == 0o600
    held = first.acquire("db", 4, "holder", ttl=30)

    restarted = LimitsActor(str(tmp_path))
    assert restarted.list() == [
        {"name": "api", "slots": 10, "per_second": 2.5, "in_use": 0},
        {"name": "db", "slots": 5, "per_second": None, "in_use": 0},  # leases are not kept
    ]
    assert restarted.take_token("api") > 0  # a restored rate starts empty: no burst after a restart
    other = restarted.acquire("db", 2, "other", ttl=30)
    assert restarted.renew([held], ttl=30) == [held]  # 4 more do not fit beside 2: lost
    restarted.release(other)
    assert restarted.renew([held], ttl=30) == [] and restarted.get("db")["in_use"] == 4  # taken again


def test_a_limit_the_history_cannot_keep_is_refused_and_the_limit_left_as_it_was(tmp_path, monkeypatch):
    """A limit lives in the history first, in memory after: a set or remove the history cannot
    take (it cannot be opened, or stays locked past WRITE_SECONDS) raises LimitError naming
    the history, and the actor's limits are what they were.  Values past what SQLite's INTEGER
    and REAL hold are refused before anything is written."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    nowhere = LimitsActor(str(not_a_folder))
    with pytest.raises(rf.LimitError, match="cannot keep it"):
        nowhere.set("db", 1)
    assert nowhere.get("db") is None

    monkeypatch.setattr(kept, "WRITE_SECONDS", 0.2)
    actor = LimitsActor(str(tmp_path / "home"))
    actor.set("db", 3)
    lock = sqlite3.connect(tmp_path / "home" / "history.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another process holds the history
    try:
        with pytest.raises(rf.LimitError, match=r"limit 'db' is not set to 7: the run history at .* cannot keep it"):
            actor.set("db", 7)
        with pytest.raises(rf.LimitError, match="cannot keep it"):
            actor.remove("db")
        assert actor.get("db")["slots"] == 3  # unchanged, in memory as in the history
    finally:
        lock.execute("ROLLBACK")
    assert kept.LimitStore(RunStore(tmp_path / "home")).load() == {"db": (3, None)}

    for slots, per_second in ((2**63, None), (99999999999999999999999, None), (3, 10**400)):
        with pytest.raises(rf.LimitError, match="at most"):
            actor.set("big", slots, per_second)
        with pytest.raises(rf.LimitError, match="at most"):
            rf.limits.set("big", slots, per_second)  # the API refuses it before any call
    actor.set("big", 2**63 - 1, per_second=1.7e308)  # the largest that are kept
    assert LimitsActor(str(tmp_path / "home")).get("big") == {"name": "big", "slots": 2**63 - 1, "per_second": 1.7e308, "in_use": 0}


def test_a_token_bucket_refills_at_its_rate_on_the_states_clock():
    """A rate of 5 a second with a burst of 2: the bucket starts full, each token is due 0.2 s
    after the last, and a full bucket keeps no more than its slots."""
    clock = FakeClock()
    state = LimitsState(clock)
    state.set("api", 2, per_second=5)
    assert state.take_token("api") == 0.0 and state.take_token("api") == 0.0  # the burst
    assert state.take_token("api") == pytest.approx(0.2)  # the next is due in 0.2 s
    clock.now += 0.1
    assert state.take_token("api") == pytest.approx(0.1)
    clock.now += 0.1
    assert state.take_token("api") == 0.0
    clock.now += 60  # an idle minute refills the burst, no more
    assert [state.take_token("api") for _ in range(3)] == [0.0, 0.0, pytest.approx(0.2)]
    state.set("api", 1, per_second=5)  # lowered: the tokens it had are capped by the new slots
    assert state.take_token("api") == pytest.approx(0.2)
    state.set("none", 0, per_second=5)
    assert state.take_token("none") == limits_state.MAX_POLL_SECONDS  # 0 holds everything back


def test_concurrency_and_rate_limit_without_ray_in_both_forms(monkeypatch):
    """In-process limits (no Ray): three coroutines on one loop share one slot in turn."""
    monkeypatch.setattr(client, "_on_ray", lambda: False)
    monkeypatch.setattr(limits_state, "_PROCESS_LIMITS", InProcessLimits())
    rf.limits.set("db", 1)
    rf.limits.set("api", 1, per_second=20)

    async def holder(i: int, order: list) -> None:
        async with rf.concurrency("db"):
            order.append("in")
            await asyncio.sleep(0.05)
            order.append("out")

    async def main() -> list:
        order: list = []
        await asyncio.gather(*(holder(i, order) for i in range(3)))
        stamps = []
        for _ in range(3):
            await rf.rate_limit_async("api")
            stamps.append(time.monotonic())
        return order, stamps

    order, stamps = asyncio.run(main())
    assert order == ["in", "out"] * 3
    assert min(b - a for a, b in zip(stamps, stamps[1:])) >= 0.04  # 20 a second
    with rf.concurrency("db"):
        assert rf.limits.get("db")["in_use"] == 1
        with pytest.raises(TimeoutError, match="no 1 slot"):
            asyncio.run(rf.concurrency("db", timeout=0.2).__aenter__())
    rf.rate_limit("api")
    assert rf.limits.get("db")["in_use"] == 0


def test_slots_go_first_come_first_served_and_a_released_lease_is_not_renewed_back():
    clock = FakeClock()
    state = LimitsState(clock)
    state.set("db", 1)
    first = state.acquire("db", 1, "first", 30)
    assert state.acquire_tags(["db"], "task", 30) == ([], 0, "db")  # queued behind the holder
    state.release(first)
    assert state.acquire("db", 1, "late", 30) is None  # a later asker waits behind the queued task
    leases, granted, blocked = state.acquire_tags(["db"], "task", 30)
    assert (granted, blocked) == (1, None)
    state.release_all(leases)
    assert state.renew(leases, 30) == leases and state.get("db")["in_use"] == 0  # a renewal that crossed the release
    restarted = LimitsState(clock)
    restarted.set("db", 1)
    assert restarted.renew(leases, 30) == [] and restarted.get("db")["in_use"] == 1  # lost in a restart: taken again
    assert state.acquire("db", 1, "late", 30) is not None and state.acquire("db", 1, "gone", 30) is None
    state.release_all([*state.leases])
    clock.now += WAITER_SECONDS - 0.01
    assert state.acquire("db", 1, "next", 30) is None  # "gone" is still queued ahead of it
    clock.now += 0.02  # "gone" stopped asking WAITER_SECONDS ago: its place lapses
    assert state.acquire("db", 1, "next", 30) is not None
