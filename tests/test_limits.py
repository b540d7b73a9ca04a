"""Named concurrency and rate limits (rf.limits, rf.concurrency, rf.rate_limit, `rayflow
limit`): held by one detached actor on the cluster, shared by every run and driver; a slot
is leased, so a holder that dies gives it back.  Overlap is checked from the intervals the
holders record, never from wall-clock limits.  The state's own rules (leases that lapse,
token buckets, queued holders that give up) are tests/test_limits_state.py's, on a fake
clock; limits by tag are tests/test_tag_limits.py's."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
from cli_runner import REPO, run_cli, run_cli_in_process
from test_async_tasks import most_at_once
from waiting import wait_for

import rayflow as rf
from rayflow.runtime.limits import actor as limits_actor
from rayflow.runtime.limits import client
from rayflow.store import RunStore
from rayflow.store import limits as kept


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_concurrency_never_lets_more_than_the_limit_hold_slots_across_two_runs(ray_session):
    name = unique("db")
    rf.limits.set(name, 2)

    @rf.task(concurrency=6)
    def query(i: int, name: str) -> tuple[int, float, float]:
        with rf.concurrency(name):
            started = time.time()
            time.sleep(0.2)
            return i, started, time.time()

    @rf.flow
    def queries(name: str) -> list:
        return query.map(range(6), name=rf.unmapped(name))


    runs: list = []
    threads = [threading.Thread(target=lambda: runs.append(queries.run(name=name))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    intervals = [v for run in runs for v in run.task_result("query")]
    assert len(intervals) == 12
    assert most_at_once(intervals) == 2  # 12 threads wanted a slot; 2 held one at a time
    assert rf.limits.get(name)["in_use"] == 0  # every slot released


def test_a_killed_holder_gives_its_slot_back_when_its_lease_lapses(ray_session, tmp_path):
    name = unique("solo")
    rf.limits.set(name, 1)

    @rf.task(system_retries=0, runtime_env={"env_vars": {"RAYFLOW_LEASE_SECONDS": "1"}})
    def dies_holding(name: str) -> None:
        with rf.concurrency(name):
            os._exit(1)  # the worker dies with the slot leased

    @rf.flow
    def crash(name: str) -> None:
        return dies_holding(name)

    run = crash.run(name=name)
    assert run.task_states["dies_holding"].type is rf.StateType.FAILED
    wait_for(lambda: rf.limits.get(name)["in_use"] == 0, timeout=15, what="the dead holder's lease to lapse")
    with rf.concurrency(name, timeout=5):
        pass


def test_rate_limit_spaces_calls_by_its_rate(ray_session):
    name = unique("api")
    rf.limits.set(name, 1, per_second=5)  # a burst of 1, then one token every 0.2 s

    @rf.task
    def calls(name: str) -> list[float]:
        stamps = []
        for _ in range(6):
            rf.rate_limit(name)
            stamps.append(time.monotonic())
        return stamps

    @rf.flow
    def paced(name: str) -> list:
        return calls(name)

    stamps = paced.run(name=name).result()
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert min(gaps) >= 0.15, gaps  # 0.2 s apart, less the actor's clock reading slightly earlier
    with pytest.raises(rf.LimitError, match="has no rate"):
        rf.limits.set(name + "-c", 3)
        rf.rate_limit(name + "-c")


def test_limits_outlive_the_driver_that_set_them_and_the_cli_answers_bad_input_in_one_line(ray_session):
    name = unique("shared")
    script = textwrap.dedent(f"""
        import ray, rayflow as rf
        ray.init(address={ray_session!r}, logging_level="warning")
        rf.limits.set({name!r}, 4)
    """)
    # set and rm in `rayflow limit` processes of their own, each joining the cluster (the set, of
    # a limit of its own, at once with the driver); the listing and the bad inputs (refused before
    # or without a change) in this process, which has joined it
    cli = lambda *args: run_cli("limit", *args, "--address", ray_session)  # noqa: E731
    here = lambda *args: run_cli_in_process("limit", *args, "--address", ray_session)  # noqa: E731
    named = unique("cli")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # the driver, a set, and `limit ls` finding no cluster: at once
        driver = pool.submit(subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
        setting = pool.submit(cli, "set", named, "7", "--per-second", "2.5")
        closed = pool.submit(run_cli, "limit", "ls", "--address", "127.0.0.1:9").result()
        out, done = driver.result(), setting.result()
    assert out.returncode == 0, out.stderr
    assert rf.limits.get(name) == {"name": name, "slots": 4, "per_second": None, "in_use": 0}  # its driver is gone
    assert closed.returncode == 3 and closed.stderr.count("\n") == 1
    assert done.returncode == 0 and done.stdout.strip() == f"limit {named}: 7 slot(s), 2.5 per second", done.stderr
    listed = here("ls")
    assert f"{named}\t7\t0\t2.5" in listed.stdout.splitlines()
    assert cli("rm", named).returncode == 0 and rf.limits.get(named) is None
    bad = [
        (("rm", named), 1, f"no limit named '{named}'"),
        (("set", "bad name", "3"), 2, "a limit's name is letters"),
        (("set", named, "-1"), 2, "a limit is a whole number of slots >= 0, not -1"),
        (("set", named, "3", "--per-second", "0"), 2, "per_second is a number of tokens per second > 0"),
    ]
    for args, code, says in bad:
        out = here(*args)
        assert out.returncode == code and out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), (args, out.stderr)
        assert says in out.stderr
    assert rf.limits.get(named) is None  # none of them set it again


def test_limit_set_fails_in_one_line_when_the_actors_history_cannot_keep_it(ray_session):
    """The cluster's limits actor, its history locked by another process: `rayflow limit set`
    exits 2 with one line naming the history, and the limit stays as it was (a restart of the
    actor would have lost a limit kept only in memory)."""
    import ray

    name = unique("locked")
    rf.limits.set(name, 2)
    actor = ray.get_actor(limits_actor.ACTOR_NAME, namespace=limits_actor.NAMESPACE)
    path = ray.get(actor.__ray_call__.remote(lambda self: str(self.keeper.path)))
    # The actor waits kept.WRITE_SECONDS (5 s) for a locked history before it fails: 0.5 s here.
    wait = ray.get(actor.__ray_call__.remote(_set_write_seconds, 0.5))
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        out = run_cli_in_process("limit", "set", name, "9", "--address", ray_session)  # as `limit ls` above
    finally:
        lock.execute("ROLLBACK")
        ray.get(actor.__ray_call__.remote(_set_write_seconds, wait))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr
    assert f"limit {name!r} is not set to 9: the run history at {path} cannot keep it" in out.stderr, out.stderr
    assert rf.limits.get(name)["slots"] == 2
    assert kept.LimitStore(RunStore(os.path.dirname(path))).load()[name] == (2, None)


def _set_write_seconds(actor: object, seconds: float) -> float:
    """Run in the limits actor (``__ray_call__``): set its LimitStore's wait for a locked history;
    returns the one it had."""
    from rayflow.store import limits

    before, limits.WRITE_SECONDS = limits.WRITE_SECONDS, seconds
    return before


def test_a_restarted_limits_actor_has_its_limits_back_from_the_history(ray_session):
    """The actor dies (Ray restarts it, running __init__ again) and then is killed for good (the
    next call makes a new one): both times it loads the limits from the history it was given.
    A holder's renewal takes its slot again; `rayflow limit ls` lists them."""
    import ray
    from typer.testing import CliRunner

    from rayflow.cli import app

    with contextlib.suppress(ValueError):  # an actor an earlier test made holds that test's history: gone
        earlier = ray.get_actor(limits_actor.ACTOR_NAME, namespace=limits_actor.NAMESPACE)
        ray.kill(earlier)
        wait_for(lambda: _dead(earlier), timeout=30, what="the earlier limits actor")
    name = unique("kept")
    rf.limits.set(name, 2)
    rf.limits.set(name + "-r", 3, per_second=4)
    lease = client.call("acquire", name, 1, "test", 30.0)
    actor = ray.get_actor(limits_actor.ACTOR_NAME, namespace=limits_actor.NAMESPACE)
    ray.kill(actor, no_restart=False)
    wait_for(lambda: rf.limits.get(name)["in_use"] == 0, timeout=60, what="the restarted actor (it has no leases)")
    assert rf.limits.get(name) == {"name": name, "slots": 2, "per_second": None, "in_use": 0}
    assert rf.limits.get(name + "-r") == {"name": name + "-r", "slots": 3, "per_second": 4.0, "in_use": 0}
    assert client.call("renew", [lease], 30.0) == [] and rf.limits.get(name)["in_use"] == 1  # its slot again
    with rf.concurrency(name, timeout=10):
        assert rf.limits.get(name)["in_use"] == 2

    ray.kill(actor)  # gone for good: no restart
    wait_for(lambda: _dead(actor), timeout=30, what="the killed actor")
    listed = CliRunner().invoke(app, ["limit", "ls"])
    assert listed.exit_code == 0, listed.output
    assert f"{name}\t2\t0\t-" in listed.output.splitlines() and f"{name}-r\t3\t0\t4" in listed.output.splitlines()


def _dead(actor) -> bool:
    import ray

    try:
        ray.get(actor.list.remote(), timeout=5)
    except ray.exceptions.RayActorError:
        return True
    return False


def test_async_holders_wait_without_blocking_their_loop(ray_session):
    """12 items of an async map, up to 12 at once on a loop, share a limit of 2: never more
    than 2 hold it, and an item waiting for a slot lets its loop run (its ticker ticks).
    An async task's rate limit spaces its calls."""
    name, rate = unique("adb"), unique("aapi")
    rf.limits.set(name, 2)
    rf.limits.set(rate, 1, per_second=5)  # a burst of 1, then one token every 0.2 s

    @rf.task(concurrency=12)
    async def hold(i: int, name: str) -> tuple[int, float, float, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        async with rf.concurrency(name, timeout=60):
            ticked_while_waiting = ticks
            started = time.time()
            await asyncio.sleep(0.1)
            ended = time.time()
        ticker.cancel()
        return i, started, ended, ticked_while_waiting

    @rf.task
    async def paced(rate: str) -> list[float]:
        stamps = []
        for _ in range(6):
            await rf.rate_limit_async(rate)
            stamps.append(time.monotonic())
        return stamps

    @rf.flow
    def held(name: str, rate: str) -> list:
        return [hold.map(range(12), name=rf.unmapped(name)), paced(rate)]

    run = held.run(name=name, rate=rate)
    values, stamps = run.task_result("hold"), run.task_result("paced")
    assert sorted(v[0] for v in values) == [*range(12)]
    assert most_at_once([v[:3] for v in values]) <= 2, values
    assert sum(v[3] > 0 for v in values) >= 6, values  # 10 waited a holder's 0.1 s at least, their loop running
    assert stamps[-1] - stamps[0] >= 0.8, stamps  # 5 tokens after the first at 5 a second: 1 s, less an answer's trip
    assert rf.limits.get(name)["in_use"] == 0
