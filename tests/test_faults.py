"""The fault suite: each fault injected on real Ray; the run either ends as an uninterrupted run
would, or ends in a clear state with a clear error — never hangs, never leaves a run RUNNING.

(Workers killed mid-map and items that crash their worker are in test_ray_failures.py and
test_fault_items.py; the history faults in test_history_faults.py.)
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest
import ray
from flows import long_flow

import rayflow as rf
from rayflow.runs.resume import check_resumable
from rayflow.runtime.actor import driver_actor
from rayflow.store import RunStore
from waiting import wait_for

pytestmark = pytest.mark.usefixtures("ray_session")
REPO = pathlib.Path(__file__).resolve().parent.parent


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@rf.task
def add(x: int, y: int) -> int:
    return x + y


@rf.flow
def adds(x: int = 1):
    return add(x, 2)


@pytest.mark.timeout(120)
def test_the_orchestrating_actor_killed_mid_run_crashes_the_run_and_the_next_run_works(tmp_path, monkeypatch):
    """The driver's FlowRunActor is killed while a run sleeps in its tasks: the driver gets a
    RunCrashedError naming the run, the history reads CRASHED (resumable), and the next run in
    the same driver works on a new actor."""
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "home"))
    adds.run(x=0)  # this driver's actor exists
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    outcome: dict = {}

    def run() -> None:
        try:
            long_flow.with_options(run_id="killed-actor").run(pid_dir=str(pid_dir), seconds=60)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: (pid_dir / "a.pid").exists() and (pid_dir / "b.pid").exists(), timeout=60)
    started = time.monotonic()
    ray.kill(driver_actor(), no_restart=True)
    thread.join(30)
    assert not thread.is_alive(), "run() did not return after its actor died"
    assert time.monotonic() - started < 10
    error = outcome.get("error")
    assert isinstance(error, rf.RunCrashedError), repr(error)
    assert error.run_id == "killed-actor" and "killed-actor" in str(error) and "ray.kill" in str(error)
    store = RunStore(tmp_path / "home")
    record = store.run("killed-actor")
    assert record["state"] == "CRASHED" and "actor orchestrating the run died" in record["message"]
    assert record["attempts"][-1]["state"] == "CRASHED"
    check_resumable("killed-actor")  # raises if it could not be resumed
    pids = {name: int((pid_dir / f"{name}.pid").read_text()) for name in ("a", "b")}
    wait_for(lambda: not any(alive(pid) for pid in pids.values()), timeout=30, what="the run's tasks to be gone")
    after = adds.run(x=5)
    assert after.result() == 7
    assert wait_for(lambda: store.run_state(after.run_id) == "SUCCESS", timeout=30)


@pytest.mark.timeout(120)
def test_an_actor_that_died_between_runs_is_replaced_without_failing_the_next_run(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    adds.run(x=0)
    ray.kill(driver_actor(), no_restart=True)
    time.sleep(1)  # the actor is gone, and no run has noticed
    assert adds.run(x=1).result() == 3
    assert adds.run(x=2).result() == 4


def _signal_during_large_map(tmp_path, sig: int, extra: list[str], group: bool) -> tuple[subprocess.CompletedProcess, float, str]:
    """Start `rayflow run` of a 10^5-item map, send ``sig`` once its workers run, and time the exit."""
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    home = tmp_path / "home"
    run_id = f"signalled-{sig}"
    cmd = [sys.executable, "-m", "rayflow", "run", "tests/flows.py:large_map", "-p", f"pid_dir={pid_dir}",
           "--run-id", run_id, *extra]
    env = {**os.environ, "RAYFLOW_HOME": str(home)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
                            start_new_session=group)
    try:
        wait_for(lambda: len(list(pid_dir.glob("*.pid"))) >= 2, timeout=90, what="the map's workers")
        time.sleep(0.5)
        sent = time.monotonic()
        if group:  # as `timeout`, or systemd's control-group stop: every process of the group
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    workers = [int(p.read_text()) for p in pid_dir.glob("*.pid")]
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=30, what="the map's workers to be gone")
    state = RunStore(home).run_state(run_id)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), took, state


@pytest.mark.timeout(180)
def test_ctrl_c_during_a_large_map_exits_130_promptly_and_cancels(tmp_path, ray_session):
    out, took, state = _signal_during_large_map(tmp_path, signal.SIGINT, ["--address", ray_session], group=False)
    assert out.returncode == 130, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "was cancelled" in out.stderr
    assert state == "CANCELLED"
    print(f"Ctrl-C to exit: {took:.2f}s")
    assert took < 10  # the issue asks for 3 s; measured in the closing note, bounded here against a hang


@pytest.mark.timeout(180)
def test_sigterm_during_a_large_map_exits_143_promptly_and_cancels(tmp_path, ray_session):
    out, took, state = _signal_during_large_map(tmp_path, signal.SIGTERM, ["--address", ray_session], group=False)
    assert out.returncode == 143, out.stderr[-3000:]
    assert "error: terminated (SIGTERM)" in out.stderr and "Traceback" not in out.stderr
    assert "SIGTERM received" not in out.stderr  # Ray's own handler's stack dump
    assert state == "CANCELLED"
    print(f"SIGTERM to exit: {took:.2f}s")
    assert took < 10


@pytest.mark.timeout(240)
def test_sigterm_to_the_process_group_stops_a_run_on_its_own_local_ray(tmp_path):
    """`timeout` and systemd signal every process of the group: the local Ray the CLI started
    stops with the driver, which records the run CANCELLED itself and exits 143, without waiting
    for the gone Ray."""
    out, took, state = _signal_during_large_map(tmp_path, signal.SIGTERM, [], group=True)
    assert out.returncode == 143, out.stderr[-3000:]
    assert "error: terminated (SIGTERM)" in out.stderr and "Traceback" not in out.stderr
    assert state == "CANCELLED"
    print(f"SIGTERM to the group to exit: {took:.2f}s")
    assert took < 10
