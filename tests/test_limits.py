"""Named concurrency and rate limits (rf.limits, rf.concurrency, rf.rate_limit, `rayflow
limit`): held by one detached actor on the cluster, shared by every run and driver; a slot
is leased, so a holder that dies gives it back.  Overlap is checked from the intervals the
holders record, never from wall-clock limits."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from cli_runner import REPO, run_cli
from test_async_tasks import most_at_once
from waiting import wait_for

import rayflow as rf
from rayflow.runtime.limits import LimitsState


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_leases_expire_and_bad_values_are_refused():
    state = LimitsState()
    state.set("db", 1)
    first = state.acquire("db", 1, "a", ttl=0.2)
    assert first is not None and state.acquire("db", 1, "b", ttl=0.2) is None
    assert state.renew([first], ttl=0.2) == []
    time.sleep(0.3)  # not renewed: its holder is taken for dead
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

    import threading

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
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert rf.limits.get(name) == {"name": name, "slots": 4, "per_second": None, "in_use": 0}  # its driver is gone

    cli = lambda *args: run_cli("limit", *args, "--address", ray_session)  # noqa: E731
    done = cli("set", name, "7", "--per-second", "2.5")
    assert done.returncode == 0 and done.stdout.strip() == f"limit {name}: 7 slot(s), 2.5 per second", done.stderr
    listed = cli("ls")
    assert f"{name}\t7\t0\t2.5" in listed.stdout.splitlines()
    assert cli("rm", name).returncode == 0 and rf.limits.get(name) is None
    bad = [
        (("rm", name), 1, f"no limit named '{name}'"),
        (("set", "bad name", "3"), 2, "a limit's name is letters"),
        (("set", name, "-1"), 2, "a limit is a whole number of slots >= 0, not -1"),
        (("set", name, "3", "--per-second", "0"), 2, "per_second is a number of tokens per second > 0"),
    ]
    with concurrent.futures.ThreadPoolExecutor(5) as pool:  # each a CLI process joining Ray: at once
        closing = pool.submit(run_cli, "limit", "ls", "--address", "127.0.0.1:9")
        outs = list(pool.map(lambda case: cli(*case[0]), bad))
        closed = closing.result()
    for (args, code, says), out in zip(bad, outs):
        assert out.returncode == code and out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), (args, out.stderr)
        assert says in out.stderr
    assert closed.returncode == 3 and closed.stderr.count("\n") == 1


def test_a_tag_limit_holds_tagged_tasks_before_submitting_across_two_runs(ray_session):
    """A limit of 2 over 8 tasks tagged with it, from two concurrent runs: never more than 2
    run at once, and those waiting were never submitted (each task's one Ray task starts
    only once a slot is free: its recorded start comes after a slot came free)."""
    name = unique("tagdb")
    rf.limits.set(name, 2)

    @rf.task(tags={name})
    def job(i: int) -> tuple[int, float, float]:
        started = time.time()
        time.sleep(0.3)
        return i, started, time.time()

    @rf.flow
    def four(base: int) -> list:
        return [job.with_options(name=f"job{i}")(base + i) for i in range(4)]

    import threading

    runs: list = []
    threads = [threading.Thread(target=lambda b=b: runs.append(four.run(base=b))) for b in (0, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    intervals = [v for run in runs for v in run.result()]
    assert sorted(i for i, _, _ in intervals) == [0, 1, 2, 3, 10, 11, 12, 13]
    assert most_at_once(intervals) == 2
    waited = [s for run in runs for key in run.task_states for s in run.history(key)
              if s.type is rf.StateType.PENDING and s.message == f"waiting for limit {name!r}"]
    assert waited  # shown as such while they waited
    assert rf.limits.get(name)["in_use"] == 0  # every slot back once the runs ended
