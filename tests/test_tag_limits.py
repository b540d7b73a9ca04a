"""Limits by tag: a tagged task (or a map's chunk) takes slots of the limits its tags name before
it is submitted, on both runners; which limits a local run honours is decided when its runner
is made (rayflow.runners), never by which modules a process happened to import."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
from cli_runner import REPO, run_cli_in_process
from otlp_sink import HttpSink
from starlette.testclient import TestClient
from test_async_tasks import most_at_once
from waiting import wait_for

import rayflow as rf
from rayflow.store import rayflow_home
from rayflow.ui import create_app


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


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
        out = run_cli_in_process("show", second_id).stdout  # read-only: in this process (was a process a poll)
        return "PENDING" in out and f"waiting for limit '{name}'" in out

    wait_for(shown, timeout=20, what="show to name the limit")
    # the UI reads the history, which the run's writer fills every FLUSH_SECONDS (0.5 s)
    client = TestClient(create_app(rayflow_home()), base_url="http://127.0.0.1:4200")  # a Host the UI answers
    page = lambda: client.get(f"/runs/{second_id}").text  # noqa: E731
    wait_for(lambda: "PENDING" in page() and f"waiting for limit &#39;{name}&#39;" in page(), timeout=20,
             what="the run page to name the limit")
    cancel_run(first_id)
    first.join(30)
    assert first_out[0].state.type is rf.StateType.CANCELLED
    second.join(60)
    assert second_out[0].result() == "ran"  # the cancelled run's slot came back
    assert rf.limits.get(name)["in_use"] == 0

    run = crash.run()
    assert run.task_states["dies"].type is rf.StateType.FAILED
    assert rf.limits.get(name)["in_use"] == 0  # given back with the attempt, long before its lease lapses


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


@pytest.fixture(scope="module")
def local_runs(ray_session) -> dict:
    """The two local runs below, each in a fresh process, run at once (seconds of start-up each):
    by name, the limit's name and what the process printed.  "cluster" joins the session's
    Ray, where this process set its limit of 1; "no ray" sets one in its own process's limits."""
    from concurrent.futures import ThreadPoolExecutor

    on_cluster, own = unique("local-tag"), unique("local-tag")
    rf.limits.set(on_cluster, 1)
    setups = {
        "cluster": (on_cluster, f"import ray\nray.init(address={ray_session!r}, logging_level='error')\n"),
        "no ray": (own, f"from rayflow.engine.limits_state import in_process_limits\nin_process_limits().call('set', {own!r}, 1)\n"),
    }
    with ThreadPoolExecutor(2) as pool:
        done = {key: (name, pool.submit(_local_run_in_a_fresh_process, name, setup)) for key, (name, setup) in setups.items()}
        return {key: (name, future.result()) for key, (name, future) in done.items()}


def test_a_local_run_honours_the_clusters_tag_limit_in_a_process_that_never_imported_the_limits(local_runs):
    """runner="local" in a fresh process joined to a cluster whose limit (1 slot) another
    process set: of two tagged tasks ready at once, one waits for the other's slot.  Which
    limits a local run honours is decided when its runner is made (rayflow.runners), not by
    whether this process happened to import the limits' module (it used to be: importing it
    set LocalRunner.gate_factory, so here the tags limited nothing)."""
    name, out = local_runs["cluster"]
    assert f"waits: [\"waiting for limit '{name}'\"]" in out, out
    assert rf.limits.get(name)["in_use"] == 0  # its slots back when the run ended


def test_a_local_run_without_ray_honours_this_processs_limits_and_imports_no_ray(local_runs):
    """Without Ray, the local runner's tagged tasks take slots of this process's limits (set
    here through the limits' state: nothing of runtime/ is imported, so neither is Ray)."""
    name, out = local_runs["no ray"]
    assert f"waits: [\"waiting for limit '{name}'\"]" in out, out
    assert "imported: []" in out, out


def test_a_runs_gate_asks_its_limits_client_and_looks_names_up_on_its_clock():
    """The TagGate (engine.admission) without Ray, over a process's own limits on a fake clock:
    tags that name no limit cost no call; a limit set meanwhile counts once NAMES_SECONDS have
    passed on the gate's clock; a grant is released with release_everything."""
    from rayflow.engine.admission import TagGate
    from rayflow.engine.limits_state import NAMES_SECONDS, InProcessLimits

    now = [1000.0]
    limits = InProcessLimits(lambda: now[0])
    gate = TagGate("run", limits, clock=lambda: now[0])
    assert gate.acquire("t", frozenset({"db"}), 3) == (3, None)  # no limits at all: nothing waits
    limits.call("set", "db", 1)
    assert gate.acquire("t2", frozenset({"db"}), 3) == (3, None)  # names not looked up again yet
    now[0] += NAMES_SECONDS
    assert gate.acquire("t3", frozenset({"db", "label"}), 3) == (1, None)  # one slot: granted 1
    assert gate.acquire("t4", frozenset({"db"}), 1) == (0, "db")
    gate.release_everything()
    assert limits.call("get", "db")["in_use"] == 0
    assert gate.acquire("t4", frozenset({"db"}), 1) == (1, None)
    gate.release_everything()
