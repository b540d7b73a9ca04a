"""Flow SLAs under `rayflow serve`: a fire not started within late_after is LATE, a run past
max_duration OVERDUE (cancelled with cancel_overdue); each recorded once in the history, notified
once, shown by `rayflow runs` and `rayflow schedules`.  The serve loop with a fake clock and
launcher, then a real `rayflow serve` process with a one-second schedule."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from cli_runner import REPO, run_cli_in_process
from notify_servers import http_server
from sla_flows import promised
from test_schedules import T0, Clock, FakeLauncher
from waiting import wait_for

import rayflow as rf
from rayflow.exceptions import TaskOptionError
from rayflow.schedules import Interval
from rayflow.serving import Server, served
from rayflow.store import RunStore
from rayflow.store import sla as misses
from rayflow.store.schedules import ScheduleStore


@pytest.fixture(scope="module")
def web():
    server = http_server()
    yield server
    server.shutdown()


def test_late_and_overdue_are_recorded_and_notified_once(tmp_path, web):
    sla = rf.SLA(late_after=5, max_duration=20, cancel_overdue=True, notify=[rf.notify.webhook(web.url + "/sla")])
    flow = promised.with_options(sla=sla)
    clock, launcher = Clock(T0), FakeLauncher()
    server = Server(served(flow, Interval(10, overlap="queue")), ScheduleStore(RunStore(tmp_path)), launcher, clock=clock)
    server.start()
    clock.now = T0 + 10
    server.tick()  # run A starts on time
    clock.now = T0 + 20
    server.tick()  # B is queued behind A
    [queued] = list(server.queued.values())[0]
    clock.now = T0 + 24
    server.tick()
    assert misses.of_runs(server.store.runs, [queued.run_id]) == {}  # 4 s: not late yet
    for now in (T0 + 26, T0 + 27):  # B late; then A past its 20 s: OVERDUE, cancelled; seen twice, recorded once
        clock.now = now
        server.tick()
    clock.now = T0 + 31
    server.tick()
    first = launcher.launched[0][2]
    assert first.cancelled
    assert misses.of_runs(server.store.runs, [first.run_id, queued.run_id]) == {
        first.run_id: ["OVERDUE"], queued.run_id: ["LATE"]}
    wait_for(lambda: len(web.bodies("/sla")) >= 2, 10, "two notifications")
    events = sorted(web.bodies("/sla"), key=lambda e: e["kind"])
    assert [(e["kind"], e["state"], e["run_id"]) for e in events] == [
        ("late", "LATE", queued.run_id), ("overdue", "OVERDUE", first.run_id)]
    assert "late_after 5s" in events[0]["message"] and "cancel_overdue" in events[1]["message"]
    # a second server over the same history (a restart) finds them recorded: not again
    again = Server(served(flow, Interval(10, overlap="queue")), ScheduleStore(RunStore(tmp_path)), FakeLauncher(), clock=clock)
    assert not again.sla._miss(again, queued, "LATE", "again")
    assert len(web.bodies("/sla")) == 2
    logs = [r["message"] for r in RunStore(tmp_path).logs(queued.run_id)]
    assert any(m.startswith("SLA LATE: not started 6.0s after") for m in logs), logs


def test_an_sla_is_checked_where_the_flow_is_defined():
    with pytest.raises(TaskOptionError, match="sla={}: Value error, invalid rf.SLA: SLA={}: an SLA needs late_after, max_duration"):
        rf.flow(sla={})(lambda: None)
    with pytest.raises(rf.SLAError, match=r"^invalid rf.SLA: late_after=-1: Input should be greater than 0$"):
        rf.SLA(late_after=-1)
    with pytest.raises(TaskOptionError, match="cancel_overdue needs max_duration"):
        rf.flow(sla={"late_after": 1, "cancel_overdue": True})(lambda: None)
    with pytest.raises(TaskOptionError, match="must be notifiers"):
        rf.flow(sla={"late_after": 1, "notify": ["https://hooks.example"]})(lambda: None)


def test_a_real_server_records_late_and_overdue_and_shows_them(tmp_path, web):
    """One run of 3 s on a 1 s schedule, one at a time: the run is OVERDUE at 1.5 s and cancelled;
    the fire queued behind it is LATE at 0.5 s; flows.toml's notify hears both."""
    home = tmp_path / "home"
    config = tmp_path / "flows.toml"
    config.write_text(
        f'[server]\nmax_concurrent = 1\ngrace = 1\n\n[[flow]]\ntarget = "{REPO}/tests/sla_flows.py:promised"\n'
        f'interval = 1\noverlap = "queue"\nparameters = {{ s = 3.0 }}\n'
        f'notify = [{{ kind = "webhook", url = "{web.url}/toml" }}]\n'
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "rayflow", "serve", "--config", str(config)], cwd=REPO,
        env={**os.environ, "RAYFLOW_HOME": str(home)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: {e["kind"] for e in web.bodies("/toml")} >= {"late", "overdue"}, 60, "LATE and OVERDUE")
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 0, err[-2000:]
    runs = RunStore(home).runs()
    overdue = [r for r in runs if "OVERDUE" in r["sla"]]
    assert overdue and overdue[0]["state"] == "CANCELLED", runs
    shown = run_cli_in_process("runs", home=home)
    assert "OVERDUE" in shown.stdout, shown.stdout
    listed = run_cli_in_process("schedules", home=home)
    [row] = [line.split("\t") for line in listed.stdout.splitlines() if line.startswith("promised/")]
    assert "1 OVERDUE" in row[5] and "LATE" in row[5], row  # the column "sla misses"
    print("\n" + shown.stdout + listed.stdout)
    # the UI: a badge on the runs list and on the run's page (no style= attribute: the CSP)
    from starlette.testclient import TestClient

    from rayflow.ui import create_app

    client = TestClient(create_app(home), base_url="http://127.0.0.1:4200")
    listing = client.get("/runs").text
    assert '<span class="badge sla" title="SLA missed: OVERDUE">OVERDUE</span>' in listing
    page = client.get(f"/runs/{overdue[0]['run_id']}").text
    assert 'class="badge big sla" id="sla-overdue"' in page and "style=" not in page
    logs = [r["message"] for r in RunStore(home).logs(overdue[0]["run_id"])]
    assert any(m.startswith("SLA OVERDUE: still running") for m in logs), logs
