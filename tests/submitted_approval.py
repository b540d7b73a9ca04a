"""The approve scenario of tests/test_submit.py's cluster (kept here: that module is at its size
limit): a submitted run's paused task approved from here with ``rayflow approve --address``,
which decides in the head's history (a short job there); the run's driver on the cluster goes
on with it.  A second run's driver is killed while its task is paused: the approval resumes it
as its job again (``rayflow resume`` on the cluster).  Its flow travels in a working dir of its own."""

from __future__ import annotations

import os
import signal
import concurrent.futures
import textwrap

from waiting import wait_for

from rayflow.store import RunStore
from rayflow.store.approvals import PauseStore

GATED = textwrap.dedent('''
    import rayflow as rf


    @rf.task
    def double(x: int) -> int:
        return 2 * x


    @rf.task(trigger=rf.triggers.manual_only)
    def ship(x: int) -> int:
        return x + 1


    @rf.flow
    def gated(n: int = 1) -> int:
        return ship(double(n))
''')


def approved_run(cluster, flows_dir, tmp_path):
    from test_submit import history_state, rayflow  # the module whose cluster this runs on

    code = tmp_path / "gated-code"
    code.mkdir()
    (code / "gated.py").write_text(GATED)
    for run_id, n in (("gated-1", 1), ("gated-2", 2)):
        out = rayflow("submit", "gated.py:gated", "--address", cluster.job_address, "--working-dir", str(code),
                      "-p", f"n={n}", "--run-id", run_id, home=tmp_path)
        assert out.returncode == 0, out.stderr
    pauses = PauseStore(RunStore(cluster.rayflow_home))
    wait_for(lambda: all(pauses.pause(r, "ship", None) is not None for r in ("gated-1", "gated-2")), timeout=90,
             what="the submitted runs' tasks paused on the cluster")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # the two decisions wait on jobs: at once
        died = pool.submit(approved_after_its_driver_died, cluster, tmp_path)
        approved = rayflow("approve", "gated-1", "ship", "--address", cluster.job_address, home=tmp_path)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert "approved task ship of run gated-1; its run goes on" in approved.stdout
        assert "resuming" not in approved.stdout
        wait_for(lambda: history_state(cluster, "gated-1") == "SUCCESS", timeout=60, what="the approved run to succeed")
        died.result()
    assert not (tmp_path / "laptop-home" / "history.db").exists()  # decided in the cluster's history only


def approved_after_its_driver_died(cluster, tmp_path):
    from test_submit import history_state, job_api, job_status, rayflow

    # its rows written first (the recorder batches them): a paused run with no row yet counts as live
    wait_for(lambda: RunStore(cluster.rayflow_home).run("gated-2") is not None, timeout=30, what="the run's rows")
    os.kill(int(job_api(cluster, "rayflow-gated-2")["driver_info"]["pid"]), signal.SIGKILL)
    wait_for(lambda: job_status(cluster, "rayflow-gated-2") == "FAILED", timeout=30, what="the killed driver's job to end")
    approved = rayflow("approve", "gated-2", "ship", "--address", cluster.job_address, home=tmp_path)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "approved task ship of run gated-2; its driver is gone" in approved.stdout
    assert "resuming run gated-2 on the cluster as job rayflow-gated-2" in approved.stdout
    assert f"rayflow show gated-2 --address {cluster.job_address}" in approved.stdout
    wait_for(lambda: history_state(cluster, "gated-2") == "SUCCESS", timeout=90, what="the resumed run to succeed")
    wait_for(lambda: job_status(cluster, "rayflow-gated-2") == "SUCCEEDED", timeout=30, what="the resumed run's job to end")
    assert "result: 5" in job_api(cluster, "rayflow-gated-2/logs")["logs"]  # ship(double(2)), on its next attempt


def test_a_submitted_runs_paused_task_is_approved_with_address(scenarios):
    scenarios["approve"].result()  # approved_run, run at once with the others
