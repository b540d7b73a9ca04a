"""The fault suite under load: cases 1, 5, 8 and 9 of the suite (README, "Failure is expected").

1. Workers SIGKILLed repeatedly, by a killer thread in the style of Ray's ``WorkerKillerActor``,
   during a 10^5-item map and during plain tasks with retries: the result is an uninterrupted
   run's, and the system retries show in the history.
5. Object store pressure: a Ray of its own with a 100 MB object store, a flow making 400 MB of
   intermediate results: it completes by spilling, and the driver's memory stays bounded.
8. Concurrency: 20 runs from 20 threads of one driver, and 3 driver processes x 5 runs on one
   ``ray start`` cluster sharing one RAYFLOW_HOME: every result right, every run's history and
   logs its own.
9. The OTLP collector down or hanging: covered in test_tracing.py, by
   ``test_a_dead_or_hanging_collector_costs_the_flow_nothing`` (a closed port and a listener that
   never answers: flow time close to tracing off) and
   ``test_driver_exits_promptly_with_a_hanging_collector`` (the driver's exit is not delayed).

Each result is checked against an oracle computed in plain Python.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
from ray_cluster import clean_env
from worker_killer import WorkerKiller

import rayflow as rf
from rayflow.store import RunStore

REPO = pathlib.Path(__file__).resolve().parent.parent


# -- 1. workers SIGKILLed repeatedly -----------------------------------------------------------


def _record_pid(pid_dir: str) -> None:
    """Leave this worker's pid for the killer (once per process)."""
    marker = os.path.join(pid_dir, f"{os.getpid()}.pid")
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


ITEMS = 100_000
ITEM_SECONDS = 50e-6  # 10^5 items: seconds of work on 2 CPUs, long enough to kill workers in


def churn_value(i: int) -> int:
    return (i * i + 7) % 1_000_003


@rf.task(system_retries=8)  # above the kills the test makes: the run must succeed
def churn(pid_dir: str, i: int) -> int:
    _record_pid(pid_dir)
    _spin(ITEM_SECONDS)
    return churn_value(i)


@rf.task
def digest(values: list[int]) -> dict:
    return {"n": len(values), "sum": sum(values), "sha": hashlib.sha256(repr(list(values)).encode()).hexdigest()}


def digest_calc(values: list[int]) -> dict:
    return {"n": len(values), "sum": sum(values), "sha": hashlib.sha256(repr(values).encode()).hexdigest()}


@rf.flow
def churned(pid_dir: str, n: int = ITEMS) -> dict:
    """churn x n -> digest"""
    values = churn.map(rf.unmapped(pid_dir), range(n))
    return {"values": values, "digest": digest(values)}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_workers_killed_repeatedly_during_a_large_map_give_the_same_result(tmp_path, monkeypatch, ray_session):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "home"))
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    killer = WorkerKiller(pid_dir, "churn", max_kills=4, interval=0.4)
    killer.start()
    try:
        started = time.monotonic()
        run = churned.with_options(run_id="killed-workers-map").run(pid_dir=str(pid_dir))
        took = time.monotonic() - started
    finally:
        killer.stop()
    expected = [churn_value(i) for i in range(ITEMS)]
    result = run.result()
    assert result["values"] == expected
    assert result["digest"] == digest_calc(expected)
    print(f"map of {ITEMS} items: {took:.1f}s, {len(killer.killed)} workers killed")
    assert len(killer.killed) >= 2, "the map ended before the killer could kill twice: make its items slower"
    # Each kill lost the chunk its worker ran; its items ran again (in halves: a lost chunk is
    # narrowed down in case one of its items killed the worker) and succeeded; the history says so.
    chunks = RunStore(tmp_path / "home").run("killed-workers-map")["chunks"]
    lost = [c for c in chunks if c["task_key"] == "churn" and c["error"]]
    assert 1 <= len(lost) <= len(killer.killed), (lost, killer.killed)
    assert all("worker" in c["error"].lower() for c in lost), lost
    done = [c for c in chunks if c["task_key"] == "churn" and not c["error"]]
    for c in lost:
        inside = [d for d in done if c["start"] <= d["start"] and d["stop"] <= c["stop"]]
        assert sum(d["counts"].get("SUCCESS", 0) for d in inside) == c["stop"] - c["start"], (c, inside)
    assert sum(c["counts"].get("SUCCESS", 0) for c in chunks if c["task_key"] == "churn") == ITEMS
    assert run.task_states["churn"].is_successful()


def steady_value(x: int) -> int:
    return x * 3 + 1


@rf.task(retries=2, system_retries=8)
def steady(pid_dir: str, x: int) -> int:
    _record_pid(pid_dir)
    time.sleep(0.7)
    return steady_value(x)


@rf.task
def add_up(values: list[int]) -> int:
    return sum(values)


@rf.flow
def steady_flow(pid_dir: str, n: int = 8) -> dict:
    """steady(0) ... steady(n-1) -> add_up"""
    values = [steady(pid_dir, x) for x in range(n)]
    return {"values": values, "total": add_up(values)}


@pytest.mark.timeout(120)
def test_workers_killed_repeatedly_during_plain_tasks_are_retried_and_give_the_same_result(tmp_path, monkeypatch, capfd, ray_session):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "home"))
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    killer = WorkerKiller(pid_dir, "steady", max_kills=3, interval=0.5)
    killer.start()
    try:
        run = steady_flow.with_options(run_id="killed-workers-tasks").run(pid_dir=str(pid_dir))
    finally:
        killer.stop()
    expected = [steady_value(x) for x in range(8)]
    assert run.result() == {"values": expected, "total": sum(expected)}
    assert len(killer.killed) == 3
    transitions = RunStore(tmp_path / "home").run("killed-workers-tasks")["transitions"]
    retries = [t for t in transitions if t["state"] == "RETRYING"]
    assert 1 <= len(retries) <= 3, retries
    assert all("system retry" in t["message"] and "worker" in t["message"].lower() for t in retries), retries
    for t in retries:  # each retried task ended SUCCESS, on a later attempt
        final = [u for u in transitions if u["task_key"] == t["task_key"]][-1]
        assert final["state"] == "SUCCESS" and final["attempt"] > t["attempt"]
    # Ray prints a lost work's error that nobody read when its reference goes: rayflow reads it.
    # What the actor prints reaches this driver's stderr through Ray's log monitor, in order: once
    # a line it prints now (after a garbage collection) has come, so has any such error before it.
    import uuid

    import ray
    from waiting import wait_for

    from rayflow.runtime.driver.actors import driver_actor

    marker = f"rayflow-test-{uuid.uuid4().hex}"
    ray.get(driver_actor().__ray_call__.remote(_print_after_gc, marker), timeout=30)
    err: list[str] = []
    wait_for(lambda: err.append(capfd.readouterr().err) or marker in "".join(err), timeout=30, what="the actor's line")
    assert "Unhandled error" not in "".join(err)


def _print_after_gc(actor: object, marker: str) -> None:
    """Run in the run's actor (``__ray_call__``): collect what it no longer holds, then print ``marker``."""
    import gc

    gc.collect()
    print(marker, file=sys.stderr, flush=True)


# -- 5. object store pressure ------------------------------------------------------------------

BLOB_BYTES = 10 * 1024 * 1024
BLOBS = 40  # 400 MB of intermediate results, against a 100 MB object store


def make_blob(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, size=BLOB_BYTES, dtype=np.uint8)


@rf.task(chunk_size=1)
def blob(i: int) -> np.ndarray:
    return make_blob(i)


@rf.task
def fold(blobs: list[np.ndarray]) -> dict:
    sha, total = hashlib.sha256(), 0
    for b in blobs:
        sha.update(b.tobytes())
        total += int(b.sum(dtype=np.int64))
    return {"n": len(blobs), "bytes": sum(b.nbytes for b in blobs), "sum": total, "sha": sha.hexdigest()}


def fold_calc(n: int) -> dict:
    sha, total = hashlib.sha256(), 0
    for i in range(n):
        b = make_blob(i)
        sha.update(b.tobytes())
        total += int(b.sum(dtype=np.int64))
    return {"n": n, "bytes": n * BLOB_BYTES, "sum": total, "sha": sha.hexdigest()}


@rf.flow
def pressure(n: int = BLOBS) -> dict:
    """blob x n (10 MB each) -> fold"""
    return fold(blob.map(range(n)))


PRESSURE_DRIVER = """
import json, re, resource, sys, time
import ray
from ray._private.internal_api import memory_summary
ray.init(num_cpus=2, object_store_memory=100 * 1024**2, include_dashboard=False, _temp_dir=sys.argv[1],
         logging_level="warning")
import test_fault_load as t

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

t.pressure.run(n=2)  # the actor up, the modules imported: what any run costs the driver
baseline = peak_mb()
started = time.monotonic()
run = t.pressure.run()
took = time.monotonic() - started
spilled = re.search(r"Spilled (\\d+) MiB, (\\d+) objects", memory_summary(ray.get_runtime_context().gcs_address, stats_only=True))
print(json.dumps({
    "state": run.state.type.value, "result": run.result(), "seconds": round(took, 1),
    "baseline_peak_mb": round(baseline), "peak_mb": round(peak_mb()),
    "spilled_mb": int(spilled.group(1)) if spilled else 0, "spilled_objects": int(spilled.group(2)) if spilled else 0,
}))
ray.shutdown()
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_flow_with_four_times_the_object_store_in_flight_completes_by_spilling(tmp_path):
    """A Ray of its own (100 MB object store) in a driver process of its own, in its own
    process group, killed whatever happens; the driver prints what it measured."""
    script = tmp_path / "driver.py"
    script.write_text(PRESSURE_DRIVER)
    temp_dir = tempfile.mkdtemp(prefix="rf-spill-", dir="/tmp")  # short: Ray's socket paths
    env = {**os.environ, "RAYFLOW_HOME": str(tmp_path / "home")}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, str(script), temp_dir], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    expected = concurrent.futures.ThreadPoolExecutor(1).submit(fold_calc, BLOBS)  # 2 s of CPU, while the driver spills
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its Ray: every process ray.init started is in the group
        except ProcessLookupError:
            pass
        proc.wait(10)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert proc.returncode == 0, stderr[-3000:]
    measured = json.loads(stdout.strip().splitlines()[-1])
    print("object store pressure:", {k: v for k, v in measured.items() if k != "result"})
    assert measured["state"] == "SUCCESS"
    assert measured["result"] == expected.result()
    assert measured["spilled_mb"] >= 100, measured  # more than the store holds went to disk
    # The driver holds the final result only, never the 400 MB: its peak grows far less than that.
    assert measured["peak_mb"] - measured["baseline_peak_mb"] < 100, measured


# -- 8. concurrency ------------------------------------------------------------------------------


def tag_value(tag: str, x: int) -> int:
    return x * x + len(tag)


@rf.task
def greet(tag: str) -> str:
    rf.get_run_logger().info("greeting <%s>", tag)
    return f"hello {tag}"


@rf.task
def noted(tag: str, x: int) -> int:
    rf.get_run_logger().info("item %d of <%s>", x, tag)
    return tag_value(tag, x)


@rf.flow
def tagged(tag: str, n: int = 6) -> dict:
    """greet   noted x n -> add_up      (every task logs the run's tag)"""
    return {"greeting": greet(tag), "total": add_up(noted.map(rf.unmapped(tag), range(n)))}


def tagged_calc(tag: str, n: int = 6) -> dict:
    return {"greeting": f"hello {tag}", "total": sum(tag_value(tag, x) for x in range(n))}


def check_own_history(store: RunStore, run_id: str, tag: str, n: int) -> None:
    """The run's row, transitions and logs are its own: its parameters, its tasks, its tag only."""
    record = store.run(run_id)
    assert record["state"] == "SUCCESS" and record["params"] == {"tag": tag, "n": n}, record
    assert {t["task_key"] for t in record["transitions"]} == {"greet", "noted", "add_up"}
    assert all(t["run_id"] == run_id for t in record["transitions"])
    noted_chunks = [c for c in record["chunks"] if c["task_key"] == "noted"]
    assert sum(c["counts"].get("SUCCESS", 0) for c in noted_chunks) == n
    messages = sorted(r["message"] for r in store.logs(run_id))
    assert messages == sorted([f"greeting <{tag}>", *(f"item {x} of <{tag}>" for x in range(n))]), messages


@pytest.mark.timeout(240)
def test_twenty_runs_from_twenty_threads_of_one_driver_keep_their_results_histories_and_logs(tmp_path, monkeypatch, ray_session):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "home"))
    tags = [f"thread{i:02d}" for i in range(20)]
    sizes = {tag: 3 + i % 5 for i, tag in enumerate(tags)}
    results: dict[str, object] = {}

    def run(tag: str) -> None:
        try:
            results[tag] = tagged.with_options(run_id=f"run-{tag}").run(tag=tag, n=sizes[tag])
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            results[tag] = exc

    threads = [threading.Thread(target=run, args=(tag,)) for tag in tags]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    print(f"20 runs from 20 threads: {time.monotonic() - started:.1f}s")
    assert not any(thread.is_alive() for thread in threads)
    store = RunStore(tmp_path / "home")
    for tag in tags:
        run = results[tag]
        assert not isinstance(run, BaseException), (tag, run)
        assert run.run_id == f"run-{tag}" and run.result() == tagged_calc(tag, sizes[tag])
        check_own_history(store, run.run_id, tag, sizes[tag])
    assert sorted(r["run_id"] for r in store.runs(limit=100)) == sorted(f"run-{tag}" for tag in tags)


DRIVER_RUNS = """
import json, sys, threading
import test_fault_load as t
driver, address = sys.argv[1], sys.argv[2]
out = [None] * 5

def run(k):
    tag = f"driver{driver}run{k}"
    run = t.tagged.with_options(run_id=f"run-{tag}", address=address).run(tag=tag, n=3 + k)
    out[k] = [tag, run.run_id, run.state.type.value, run.result()]

run(0)  # connects this driver to the cluster; then four at once
threads = [threading.Thread(target=run, args=(k,)) for k in range(1, 5)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_three_drivers_of_five_runs_on_one_cluster_share_a_history_without_cross_talk(tmp_path, token_cluster):
    token = token_cluster.token
    home = tmp_path / "home"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER_RUNS)
    user_home = tmp_path / "user"
    user_home.mkdir()
    env = clean_env(user_home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAYFLOW_HOME=str(home))
    # a `ray start` cluster that requires a token (conftest.py, shared with test_cluster_auth.py)
    started = time.monotonic()
    drivers = [
        subprocess.Popen([sys.executable, str(script), str(d), token_cluster.address], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        for d in range(3)
    ]
    try:
        outputs = [driver.communicate(timeout=200) for driver in drivers]
    finally:
        for driver in drivers:
            if driver.poll() is None:
                driver.kill()
                driver.wait(10)
    print(f"3 drivers x 5 runs on one cluster: {time.monotonic() - started:.1f}s")
    for driver, (stdout, stderr) in zip(drivers, outputs):
        assert driver.returncode == 0, stderr[-3000:]
    store = RunStore(home)
    seen = []
    for stdout, _ in outputs:
        for k, (tag, run_id, state, result) in enumerate(json.loads(stdout.strip().splitlines()[-1])):
            assert state == "SUCCESS" and result == tagged_calc(tag, 3 + k), (tag, result)
            check_own_history(store, run_id, tag, 3 + k)
            seen.append(run_id)
    assert len(set(seen)) == 15
    assert sorted(r["run_id"] for r in store.runs(limit=100)) == sorted(seen)
