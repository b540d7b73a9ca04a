"""A Ray run's answer does not wait for the disk: its actor writes the run's last history rows
after answering the driver (runtime.driver.history_wait).  What must still hold: a run that
ended is in the history before its driver's process is gone (exit, or ``ray.shutdown()`` first),
and ``rayflow show`` right after the run sees it; a read of the history in the driver right after
a run sees it too."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from cli_runner import REPO, run_cli_in_process

from rayflow.store import RunStore

DRIVER = textwrap.dedent(
    """
    import os, sqlite3, sys, time
    import ray
    import rayflow as rf
    from rayflow.runtime.driver.actors import driver_actor

    ray.init(address=sys.argv[1], logging_level="error")

    @rf.task
    def one():
        return 1

    @rf.flow
    def tiny():
        return one()

    def slow_disk(actor):  # run in the driver's actor: each history write takes a second more
        from rayflow.store.history import RunStore as Store
        write = Store.write
        def slow(self, *args, **kwargs):
            time.sleep(1.0)
            return write(self, *args, **kwargs)
        Store.write = slow

    assert tiny() == 1  # the actor is made, and has written this run's history
    ray.get(driver_actor().__ray_call__.remote(slow_disk))
    run = tiny.run()  # answered while its rows are on their way to the disk
    assert run.result() == 1
    path = os.path.join(os.environ["RAYFLOW_HOME"], "history.db")
    with sqlite3.connect(path) as db:  # a plain read, not RunStore's (which waits for the rows)
        on_disk = db.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run.run_id]).fetchone()[0]
    print(run.run_id, on_disk, flush=True)
    if sys.argv[2] == "shutdown":
        ray.shutdown()  # takes the driver's actor along: the rows must be written first
    """
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("end", ["exit", "shutdown"])
def test_a_run_answered_before_its_history_is_written_is_in_the_history_once_its_driver_is_gone(
    ray_session, tmp_path, end
):
    env = {**os.environ, "RAYFLOW_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, ray_session, end], capture_output=True, text=True, timeout=100, env=env, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    run_id, on_disk = proc.stdout.split()
    assert on_disk == "0"  # the driver had the run's answer while its rows were not on disk
    run = RunStore(tmp_path).run(run_id)
    assert run is not None and run["state"] == "SUCCESS"
    with sqlite3.connect(RunStore(tmp_path).path) as db:
        states = [r[0] for r in db.execute("SELECT state FROM transitions WHERE run_id = ? ORDER BY seq", [run_id])]
    assert states == ["RUNNING", "SUCCESS"]
    shown = run_cli_in_process("show", run_id, home=tmp_path)
    assert shown.returncode == 0 and "SUCCESS" in shown.stdout, shown.stdout + shown.stderr


def test_the_driver_reads_a_run_it_was_just_answered_for(ray_session, tmp_path, monkeypatch):
    """In the driver, the history is read only once the last rows of its answered runs are written."""
    from flows import adds

    from rayflow.runtime.driver import history_wait

    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    run = adds.run(x=1)
    assert run.result() == 3
    assert RunStore(tmp_path).run(run.run_id)["state"] == "SUCCESS"
    assert history_wait.pending() == []
