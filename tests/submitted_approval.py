"""The approve scenario of tests/test_submit.py's cluster (kept here: that module is at its size
limit): a submitted run's paused task approved from here with ``rayflow approve --address``,
which decides in the head's history (a short job there); the run's driver on the cluster goes
on with it.  Its flow travels in a working dir of its own."""

from __future__ import annotations

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
    out = rayflow("submit", "gated.py:gated", "--address", cluster.job_address, "--working-dir", str(code),
                  "--run-id", "gated-1", home=tmp_path)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: PauseStore(RunStore(cluster.rayflow_home)).pause("gated-1", "ship", None) is not None, timeout=90,
             what="the submitted run's task paused on the cluster")
    approved = rayflow("approve", "gated-1", "ship", "--address", cluster.job_address, home=tmp_path)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "approved task ship of run gated-1; its run goes on" in approved.stdout
    wait_for(lambda: history_state(cluster, "gated-1") == "SUCCESS", timeout=60, what="the approved run to succeed")
    assert not (tmp_path / "laptop-home" / "history.db").exists()  # decided in the cluster's history only


def test_a_submitted_runs_paused_task_is_approved_with_address(scenarios):
    scenarios["approve"].result()  # approved_run, run at once with the others
