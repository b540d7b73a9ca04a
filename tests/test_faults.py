"""The fault suite: each fault injected on real Ray; the run either ends as an uninterrupted run
would, or ends in a clear state with a clear error — never hangs, never leaves a run RUNNING.

(Workers killed mid-map and items that crash their worker are in test_ray_failures.py and
test_fault_items.py; the history faults in test_history_faults.py.)
"""

from __future__ import annotations

import os
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
