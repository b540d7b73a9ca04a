"""Named concurrency and rate limits (rf.limits, rf.concurrency, rf.rate_limit, `rayflow
limit`): held by one detached actor on the cluster, shared by every run and driver; a slot
is leased, so a holder that dies gives it back.  Overlap is checked from the intervals the
holders record, never from wall-clock limits.  The state's own rules (leases that lapse,
token buckets, queued holders that give up) run on a fake clock: no test waits for them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
from cli_runner import REPO, run_cli
from otlp_sink import HttpSink
from starlette.testclient import TestClient
from test_async_tasks import most_at_once
from waiting import wait_for

import rayflow as rf
from rayflow.engine import limits_state
from rayflow.engine.limits_state import WAITER_SECONDS, InProcessLimits, LimitsState
from rayflow.runtime.limits import actor as limits_actor
from rayflow.runtime.limits import client
from rayflow.runtime.limits.actor import LimitsActor
from rayflow.store import RunStore, rayflow_home
from rayflow.store import limits as kept
from rayflow.ui import create_app


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


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


def test_limit_set_fails_in_one_line_when_the_actors_history_cannot_keep_it(ray_session):
    """The cluster's limits actor, its history locked by another process: `rayflow limit set`
    exits 2 with one line naming the history, and the limit stays as it was (a restart of the
    actor would have lost a limit kept only in memory)."""
    import ray

    name = unique("locked")
    rf.limits.set(name, 2)
    actor = ray.get_actor(limits_actor.ACTOR_NAME, namespace=limits_actor.NAMESPACE)
    path = ray.get(actor.__ray_call__.remote(lambda self: str(self.keeper.path)))
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        out = run_cli("limit", "set", name, "9", "--address", ray_session)
    finally:
        lock.execute("ROLLBACK")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr
    assert f"limit {name!r} is not set to 9: the run history at {path} cannot keep it" in out.stderr, out.stderr
    assert rf.limits.get(name)["slots"] == 2
    assert kept.LimitStore(RunStore(os.path.dirname(path))).load()[name] == (2, None)


GATED = """
import rayflow as rf

@rf.task(tags={{{name!r}}})
def load(x: int) -> int:
    return x

@rf.task(tags={{{name!r}}}, chunk_size=2)
def each(x: int) -> int:
    return x

@rf.flow
def gated(n: int = 40) -> list:
    return [load(1), each.map(range(n))]
"""


@pytest.mark.timeout(180)
def test_rayflow_run_says_when_a_task_starts_waiting_for_a_limit_and_when_it_goes_on(ray_session, tmp_path):
    """A limit of 0 holds a tagged task and a tagged map of 20 chunks: `rayflow run` prints
    (on stderr) one line per task as it waits, none per chunk, and one as it goes on once the
    limit is raised (to 5: the map's chunks run 5 at once, so the map never waits again)."""
    name = unique("gate")
    rf.limits.set(name, 0)
    (tmp_path / "gated.py").write_text(GATED.format(name=name))
    proc = subprocess.Popen(
        [sys.executable, "-m", "rayflow", "run", f"{tmp_path / 'gated.py'}:gated", "--address", ray_session],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        waiting = lambda key: [line for line in lines if f" {key}: waiting for limit '{name}'" in line]  # noqa: E731
        wait_for(lambda: waiting("load") and waiting("each"), timeout=90, what=f"the wait lines, got {lines}")
        rf.limits.set(name, 5)
        proc.wait(timeout=90)  # (stderr is the reader's: no communicate())
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    assert proc.returncode == 0, (out, lines)
    for key in ("load", "each"):
        assert len(waiting(key)) == 1, lines
        went = [line for line in lines if f" {key}: goes on after " in line]
        assert len(went) == 1 and went[0].endswith(f"s waiting for limit '{name}'\n"), lines
        assert lines.index(waiting(key)[0]) < lines.index(went[0])


def test_a_tag_limit_holds_tagged_tasks_before_submitting_across_two_runs(ray_session, monkeypatch):
    """A limit of 2 over 8 tasks tagged with it, from two concurrent runs: never more than 2
    run at once, and those waiting were never submitted (each task's one Ray task starts
    only once a slot is free: its recorded start comes after a slot came free).  The wait is
    a PENDING state naming the limit, and a span."""
    sink = HttpSink()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
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


    runs: list = []
    threads = [threading.Thread(target=lambda b=b: runs.append(four.run(base=b))) for b in (0, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    intervals = [v for run in runs for v in run.result()]
    assert sorted(i for i, _, _ in intervals) == [0, 1, 2, 3, 10, 11, 12, 13]
    assert most_at_once(intervals) <= 2  # (2 at once, unless the machine is too busy to start them together)
    waited = [s for run in runs for key in run.task_states for s in run.history(key)
              if s.type is rf.StateType.PENDING and s.message == f"waiting for limit {name!r}"]
    assert waited  # shown as such while they waited
    assert rf.limits.get(name)["in_use"] == 0  # every slot back once the runs ended
    waiters = {(run.run_id, key) for run in runs for key in run.task_states
               if any(s.message == f"waiting for limit {name!r}" for s in run.history(key))}
    traces = {run.trace_id for run in runs}
    ours = lambda spans: [s for s in spans if s["trace_id"] in traces]  # noqa: E731
    spans = ours(sink.wait_for(lambda spans: len(ours(spans)) >= 2 + 8 + len(waiters)))  # flows, tasks, waits
    sink.close()
    waits = [s for s in spans if s["name"].startswith("limit wait ")]
    assert len(waits) == len(waiters) and all(s["attributes"]["rayflow.limit"] == name and s["end"] > s["start"] for s in waits)


@rf.task(concurrency=8)
async def fetch(i: int) -> tuple[int, float, float]:
    started = time.time()
    await asyncio.sleep(0.1)
    return i, started, time.time()


@rf.task
def crunch(i: int) -> tuple[int, float, float]:
    started = time.time()
    time.sleep(0.05)
    return i, started, time.time()


def test_a_tag_limit_counts_a_mapped_tasks_running_items(runner, monkeypatch):
    """Two tagged maps share a limit of 3: an async map (8 items of a chunk at once) and a plain
    one.  Never more than 3 items run at once, a chunk granted several slots runs several
    items at once, and the chunks left waiting were never submitted.  Both runners."""
    sink = HttpSink()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
    name = unique("tagmap")
    rf.limits.set(name, 3)

    @rf.flow
    def both(n: int) -> tuple:
        return fetch.with_options(tags={name}).map(range(n)), crunch.with_options(tags={name}).map(range(n))

    run = both.with_options(runner=runner).run(n=24)
    fetched, crunched = run.result()
    assert [i for i, _, _ in fetched] == [i for i, _, _ in crunched] == list(range(24))
    assert most_at_once(fetched + crunched) <= 3
    assert most_at_once(fetched) >= 2  # a chunk of the async map ran on more than one slot
    assert rf.limits.get(name)["in_use"] == 0
    chunks = lambda spans: [s for s in spans if s["trace_id"] == run.trace_id and s["name"].startswith("chunk ")]  # noqa: E731
    spans = chunks(sink.wait_for(lambda spans: sum(s["attributes"]["rayflow.items"] for s in chunks(spans)) >= 48))
    sink.close()
    assert spans and all(1 <= s["attributes"]["rayflow.limit_slots"] <= 3 for s in spans)  # the slots each ran with


def test_tag_limits_release_slots_of_a_cancelled_run_and_of_a_killed_worker_and_hold_no_cpu_while_waiting(ray_session, tmp_path):
    """A limit of 1: a run holding it is cancelled, and a run waiting on it meanwhile holds no
    CPU (its task was never submitted); a tagged task whose worker dies gives its slot back
    as its attempt ends, not when its lease lapses (30 s)."""
    import ray

    name = unique("gate")
    rf.limits.set(name, 1)
    started = tmp_path / "started"

    @rf.task(tags={name}, num_cpus=1)
    def hold(path: str) -> None:
        open(path, "w").close()
        time.sleep(60)

    @rf.task(tags={name}, num_cpus=1)
    def after() -> str:
        return "ran"

    @rf.task(tags={name}, system_retries=0)
    def dies() -> None:
        os._exit(1)

    @rf.flow
    def holding(path: str) -> None:
        hold(path)

    @rf.flow
    def waiting() -> str:
        return after()

    @rf.flow
    def crash() -> None:
        dies()

    from rayflow.runtime import cancel_run, find_run

    def background(flow, run_id, **params):
        out: list = []
        thread = threading.Thread(target=lambda: out.append(flow.with_options(run_id=run_id).run(**params)), daemon=True)
        thread.start()
        return thread, out

    cpus = ray.available_resources().get("CPU", 0)
    first_id, second_id = unique("hold"), unique("wait")
    first, first_out = background(holding, first_id, path=str(started))
    wait_for(started.exists, timeout=60, what="the holding task to start")
    second, second_out = background(waiting, second_id)
    def second_waits() -> bool:
        try:
            return find_run(second_id)[1].task_states["after"].message == f"waiting for limit {name!r}"
        except rf.UnknownRunError:  # not started yet
            return False

    wait_for(second_waits, timeout=30, what="the second run to wait for the limit")
    # one task holds a CPU, the waiting one none (both running would leave cpus - 2 for 60 s);
    # Ray's view of free resources lags a little behind
    wait_for(lambda: ray.available_resources().get("CPU", 0) == cpus - 1, timeout=15, what="one CPU taken, not two")
    # rayflow show and the UI name the limit it waits on
    def shown() -> bool:
        out = run_cli("show", second_id).stdout
        return "PENDING" in out and f"waiting for limit '{name}'" in out

    wait_for(shown, timeout=20, what="show to name the limit")
    page = TestClient(create_app(rayflow_home()), base_url="http://127.0.0.1:4200").get(f"/runs/{second_id}").text  # a Host the UI answers
    assert "PENDING" in page and f"waiting for limit &#39;{name}&#39;" in page
    cancel_run(first_id)
    first.join(30)
    assert first_out[0].state.type is rf.StateType.CANCELLED
    second.join(60)
    assert second_out[0].result() == "ran"  # the cancelled run's slot came back
    assert rf.limits.get(name)["in_use"] == 0

    run = crash.run()
    assert run.task_states["dies"].type is rf.StateType.FAILED
    assert rf.limits.get(name)["in_use"] == 0  # given back with the attempt, long before its lease lapses


def test_a_restarted_limits_actor_has_its_limits_back_from_the_history(ray_session):
    """The actor dies (Ray restarts it, running __init__ again) and then is killed for good (the
    next call makes a new one): both times it loads the limits from the history it was given.
    A holder's renewal takes its slot again; `rayflow limit ls` lists them."""
    import ray
    from typer.testing import CliRunner

    from rayflow.cli import app

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


@rf.task
def warm_up(seconds: float) -> float:
    time.sleep(seconds)
    return time.time()


def test_a_task_waiting_on_a_limit_is_not_starved_by_a_map_asking_again_as_each_chunk_ends(runner):
    """A limit of 1 shared by a 30-item map (a chunk per item, each asking the moment the one
    before ends) and a plain task that asks a little later: the task gets the next slot."""
    name = unique("fair")
    rf.limits.set(name, 1)

    @rf.flow
    def contended() -> tuple:
        items = crunch.with_options(tags={name}, chunk_size=1).map(range(30))
        late = crunch.with_options(name="late", tags={name})(warm_up(0.3))
        return items, late

    items, (_, late_start, _) = contended.with_options(runner=runner).run().result()
    starts = sorted(s for _, s, _ in items)
    assert late_start < starts[-10]  # it did not wait for the map to run dry
    assert most_at_once(items + [(-1, late_start, late_start + 0.05)]) == 1


LOCAL_RUN_OF_TAGGED_TASKS = """
import sys, time
import rayflow as rf
{setup}

@rf.task(tags={{{name!r}}})
def hold(i: int) -> int:
    time.sleep(0.3)
    return i

@rf.flow(runner="local")
def tagged() -> list:
    return [hold(i) for i in range(2)]

run = tagged.run()
assert run.is_successful(), run.state
waits = [s.message for key in ("hold", "hold-2") for s in run.history(key) if s.type.value == "PENDING" and s.message]
print("waits:", waits)
print("imported:", sorted(m for m in sys.modules if m.startswith("rayflow.runtime")))
"""


def _local_run_in_a_fresh_process(name: str, setup: str) -> str:
    script = LOCAL_RUN_OF_TAGGED_TASKS.format(name=name, setup=textwrap.dedent(setup))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_local_run_honours_the_clusters_tag_limit_in_a_process_that_never_imported_the_limits(ray_session):
    """runner="local" in a fresh process joined to a cluster whose limit (1 slot) another
    process set: of two tagged tasks ready at once, one waits for the other's slot.  Which
    limits a local run honours is decided when its runner is made (rayflow.runners), not by
    whether this process happened to import the limits' module (it used to be: importing it
    set LocalRunner.gate_factory, so here the tags limited nothing)."""
    name = unique("local-tag")
    rf.limits.set(name, 1)
    out = _local_run_in_a_fresh_process(name, f"import ray\nray.init(address={ray_session!r}, logging_level='error')\n")
    assert f"waits: [\"waiting for limit '{name}'\"]" in out, out
    assert rf.limits.get(name)["in_use"] == 0  # its slots back when the run ended


def test_a_local_run_without_ray_honours_this_processs_limits_and_imports_no_ray():
    """Without Ray, the local runner's tagged tasks take slots of this process's limits (set
    here through the limits' state: nothing of runtime/ is imported, so neither is Ray)."""
    name = unique("local-tag")
    setup = f"from rayflow.engine.limits_state import in_process_limits\nin_process_limits().call('set', {name!r}, 1)\n"
    out = _local_run_in_a_fresh_process(name, setup)
    assert f"waits: [\"waiting for limit '{name}'\"]" in out, out
    assert "imported: []" in out, out
