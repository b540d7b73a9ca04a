"""Schedules and `rayflow serve`.

Fire times are checked against golden tables around both daylight-saving
changes in Europe/Berlin and America/New_York (2026).  The serve loop's
policies run with a fake clock and a fake launcher over a real SQLite
history; a real `rayflow serve` process runs a flow on the session's Ray and
is stopped with SIGTERM.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from cli_runner import REPO, run_cli_in_process
from waiting import wait_for
from flows import two_branches

import rayflow as rf
from rayflow.exceptions import ScheduleError
from rayflow.schedules import Cron, Interval, Union, from_spec
from rayflow.serving import Server, served
from rayflow.store import RunStore
from rayflow.store.schedules import ScheduleStore

UTC = dt.timezone.utc


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def local(schedule, times) -> list[str]:
    return [t.astimezone(schedule.tz).isoformat() for t in times]


# -- fire times -------------------------------------------------------------------------------


def test_cron_in_berlin_across_both_changes_follows_debian_cron():
    daily = Cron("30 2 * * *", timezone="Europe/Berlin")
    # spring 2026-03-29: 02:00 -> 03:00, there is no 02:30: it fires as the clock jumps, at 03:00
    assert local(daily, daily.upcoming(utc(2026, 3, 27), 4)) == [
        "2026-03-27T02:30:00+01:00", "2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00",
    ]
    # autumn 2026-10-25: 03:00 -> 02:00, 02:30 happens twice: it fires once, at the first
    assert local(daily, daily.upcoming(utc(2026, 10, 24), 3)) == [
        "2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00",
    ]
    hourly = Cron("0 * * * *", timezone="Europe/Berlin")  # not a fixed time: every real hour, both 02:00s
    assert [t.isoformat() for t in hourly.upcoming(utc(2026, 10, 24, 23, 30), 4)] == [
        "2026-10-25T00:00:00+00:00", "2026-10-25T01:00:00+00:00", "2026-10-25T02:00:00+00:00", "2026-10-25T03:00:00+00:00",
    ]
    assert local(hourly, hourly.upcoming(utc(2026, 10, 24, 23, 30), 3)) == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00",
    ]


def test_cron_in_new_york_across_both_changes():
    early = Cron("30 2 * * *", timezone="America/New_York")  # spring 2026-03-08: 02:00 -> 03:00
    assert local(early, early.upcoming(utc(2026, 3, 7), 3)) == [
        "2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00",
    ]
    night = Cron("30 1 * * *", timezone="America/New_York")  # autumn 2026-11-01: 01:30 happens twice
    assert local(night, night.upcoming(utc(2026, 10, 31), 3)) == [
        "2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00",
    ]
    weekdays = Cron("0 6 * * 1-5", timezone="America/New_York")
    assert local(weekdays, weekdays.upcoming(utc(2026, 11, 6, 12), 3)) == [  # Friday noon: Mon, Tue, Wed
        "2026-11-09T06:00:00-05:00", "2026-11-10T06:00:00-05:00", "2026-11-11T06:00:00-05:00",
    ]


def test_intervals_step_in_utc_under_a_day_and_keep_the_wall_clock_from_a_day():
    every_90 = Interval(dt.timedelta(minutes=90), timezone="Europe/Berlin")
    fires = every_90.upcoming(utc(2026, 3, 29, 0, 10), 3)
    assert [b - a for a, b in zip(fires, fires[1:])] == [dt.timedelta(minutes=90)] * 2  # through the change
    daily = Interval(dt.timedelta(days=1), anchor=dt.datetime(2026, 1, 1, 6, 0), timezone="Europe/Berlin")
    assert local(daily, daily.upcoming(utc(2026, 3, 28), 3)) == [
        "2026-03-28T06:00:00+01:00", "2026-03-29T06:00:00+02:00", "2026-03-30T06:00:00+02:00",
    ]
    gap = Interval(dt.timedelta(days=1), anchor=dt.datetime(2026, 1, 1, 2, 30), timezone="Europe/Berlin")
    assert local(gap, gap.upcoming(utc(2026, 3, 28, 12), 2)) == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    assert Interval(5).next_after(utc(2026, 1, 1, 0, 0, 7)) == utc(2026, 1, 1, 0, 0, 10)  # seconds, anchored


def test_aliases_unions_and_specs():
    start = utc(2026, 11, 25, 10, 17)  # a Wednesday
    assert Cron("@hourly").next_after(start) == utc(2026, 11, 25, 11)
    assert Cron("@daily").next_after(start) == Cron("@midnight").next_after(start) == utc(2026, 11, 26)
    assert Cron("@weekly").next_after(start) == utc(2026, 11, 29)  # Sunday
    assert Cron("@monthly").next_after(start) == utc(2026, 12, 1)
    assert Cron("@yearly").next_after(start) == Cron("@annually").next_after(start) == utc(2027, 1, 1)
    both = Cron("0 6 * * *", parameters={"n": 1}) | Cron("0 18 * * *", parameters={"n": 2})
    assert isinstance(both, Union) and [m.parameters for m in both.members()] == [{"n": 1}, {"n": 2}]
    assert both.upcoming(start, 3) == [utc(2026, 11, 25, 18), utc(2026, 11, 26, 6), utc(2026, 11, 26, 18)]
    for schedule in (both, Interval(dt.timedelta(hours=2), timezone="Asia/Tokyo", overlap="queue")):
        again = from_spec(json.loads(json.dumps(schedule.spec())))
        assert again.upcoming(start, 5) == schedule.upcoming(start, 5) and again.key() == schedule.key()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Cron("61 * * * *"), "bad cron expression '61 \\* \\* \\* \\*': Bad minute"),
        (lambda: Cron("* * *"), "Wrong number of fields"),
        (lambda: Cron("@often"), "unknown cron alias"),
        (lambda: Cron("0 6 * * *", timezone="Mars/Olympus"), "unknown timezone 'Mars/Olympus'"),
        (lambda: Interval(0), "from 1 to 1e10, got 0"),
        (lambda: Interval(60, overlap="sometimes"), "overlap must be one of skip, queue, allow, cancel_running"),
        (lambda: Interval(60, catchup="never"), "catchup must be one of"),
        (lambda: Union(), "at least one"),
    ],
)
def test_bad_schedules_are_named(make, message):
    with pytest.raises(ScheduleError, match=message):
        make()


# -- the serve loop, with a fake clock ------------------------------------------------------------


class FakeHandle:
    def __init__(self, run_id: str):
        self.run_id = run_id
        self.finished: str | None = None
        self.cancelled = False

    def done(self) -> bool:
        return self.finished is not None

    def state(self) -> str:
        return self.finished or "RUNNING"

    def cancel(self) -> None:
        self.cancelled = True
        self.finished = "CANCELLED"


class FakeLauncher:
    def __init__(self):
        self.launched: list[tuple[str, float, FakeHandle]] = []
        self.lock = threading.Lock()

    def launch(self, entry, scheduled_for, run_id):
        handle = FakeHandle(run_id)
        with self.lock:
            self.launched.append((entry.schedule_id, scheduled_for, handle))
        return handle


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


T0 = utc(2026, 11, 25, 12).timestamp()


def _server(tmp_path, *schedules, launcher=None, clock=None, **options):
    store = ScheduleStore(RunStore(tmp_path))
    entries = [e for s in schedules for e in served(two_branches, s)]
    server = Server(entries, store, launcher or FakeLauncher(), clock=clock or Clock(T0), **options)
    server.start()
    return server


def _outcomes(server) -> list[str]:
    return [f["outcome"] for e in server.entries for f in server.store.fires(e.schedule_id)]


@pytest.mark.parametrize(
    "overlap, launches, outcomes",
    [
        ("skip", 2, ["ended SUCCESS", "skipped (overlap)", "started"]),
        ("queue", 3, ["ended SUCCESS", "ended SUCCESS", "started"]),
        ("allow", 3, ["ended SUCCESS", "ended SUCCESS", "started"]),
        ("cancel_running", 3, ["ended CANCELLED", "ended SUCCESS", "started"]),
    ],
)
def test_overlap_policies(tmp_path, overlap, launches, outcomes):
    clock = Clock(T0)
    server = _server(tmp_path, Interval(10, overlap=overlap), clock=clock)
    launcher = server.launcher
    clock.now = T0 + 10
    server.tick()  # fire 1 starts
    assert len(launcher.launched) == 1
    clock.now = T0 + 20
    server.tick()  # fire 2: run 1 still going
    first = launcher.launched[0][2]
    if overlap == "cancel_running":
        assert first.cancelled
    else:
        first.finished = "SUCCESS"
    if overlap == "allow":
        launcher.launched[1][2].finished = "SUCCESS"
    clock.now = T0 + 30
    server.tick()  # reaps; a queued fire 2 starts; fire 3 (skip: the slot is free again)
    if overlap == "queue":
        launcher.launched[1][2].finished = "SUCCESS"
        clock.now = T0 + 31
        server.tick()  # fire 3 was queued behind fire 2
    elif overlap == "cancel_running":
        launcher.launched[1][2].finished = "SUCCESS"
        clock.now = T0 + 31
        server.tick()
    assert len(launcher.launched) == launches
    assert _outcomes(server) == outcomes
    assert [t for _, t, _ in launcher.launched] == sorted(t for _, t, _ in launcher.launched)


def test_max_concurrent_holds_fires_until_a_slot_frees(tmp_path):
    clock = Clock(T0)
    server = _server(tmp_path, Interval(10), Interval(10, parameters={"seconds": 2.0}), clock=clock, max_concurrent=1)
    clock.now = T0 + 10
    server.tick()
    assert len(server.launcher.launched) == 1 and len(server.waiting) == 1
    assert "waiting (max_concurrent)" in _outcomes(server)
    server.launcher.launched[0][2].finished = "FAILED"  # a failing run: the server goes on
    clock.now = T0 + 11
    server.tick()
    assert len(server.launcher.launched) == 2 and not server.waiting


@pytest.mark.parametrize(
    "catchup, expected", [("skip", [1000.0]), ("latest", [990.0, 1000.0]), ("all", [960.0, 970.0, 980.0, 990.0, 1000.0])]
)
def test_catchup_after_downtime_and_evaluated_time_persisted(tmp_path, catchup, expected):
    schedule = Interval(10, catchup=catchup, max_catchup=4, overlap="allow")
    first = _server(tmp_path, schedule)  # registered at T0, then the server stops
    first.tick()
    assert first.launcher.launched == []
    clock = Clock(T0 + 1000)  # a restart 1000 s later: fires more than late_after late were missed
    again = _server(tmp_path, schedule, clock=clock, late_after=5, max_concurrent=10)
    again.tick()  # the fire due now is on time under every policy; the missed ones follow catchup
    assert [t - T0 for _, t, _ in again.launcher.launched] == expected
    clock.now = T0 + 1010  # on time again: this one fires under every policy
    again.tick()
    assert [t - T0 for _, t, _ in again.launcher.launched][-1] == 1010.0
    (row,) = ScheduleStore(RunStore(tmp_path)).schedules()
    assert row["evaluated_until"] == T0 + 1010 and row["next_fire"] == T0 + 1020


def test_two_servers_racing_on_one_history_start_each_fire_once(tmp_path):
    clock = Clock(T0)
    launcher = FakeLauncher()
    servers = [_server(tmp_path, Interval(1, overlap="allow"), launcher=launcher, clock=clock, max_concurrent=100) for _ in range(2)]
    for second in range(1, 21):
        clock.now = T0 + second
        threads = [threading.Thread(target=s.tick) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    times = [t for _, t, _ in launcher.launched]
    assert sorted(times) == [T0 + s for s in range(1, 21)]  # every fire once, none twice


def test_stop_waits_for_runs_within_the_grace_period_then_cancels(tmp_path):
    clock = Clock(T0)
    server = _server(tmp_path, Interval(10), clock=clock)
    clock.now = T0 + 10
    server.tick()
    handle = server.launcher.launched[0][2]

    def sleep(seconds):
        clock.now += seconds

    server.stop(grace=5, sleep=sleep, cancel_wait=1)
    assert handle.cancelled and _outcomes(server) == ["ended CANCELLED"]


def test_served_checks_parameters_and_duplicates_at_start():
    with pytest.raises(rf.ParameterError, match="seconds"):
        served(two_branches, Interval(5, parameters={"seconds": "soon"}))
    with pytest.raises(ScheduleError, match="served twice"):
        Server([*served(two_branches, Interval(5)), *served(two_branches, Interval(5))], None, FakeLauncher())


# -- the command line, and a real server on Ray ---------------------------------------------------


def test_cli_rejects_bad_schedules_in_one_line(tmp_path):
    target = "tests/flows.py:two_branches"
    cases = [
        (["serve", target, "--cron", "61 * * * *"], "bad cron expression"),
        (["serve", target, "--interval", "5", "--timezone", "Nowhere/City"], "unknown timezone"),
        (["serve", "tests/no_such_file.py:flow", "--interval", "5"], "no_such_file.py"),
        (["serve", target], "exactly one of --cron"),
        (["serve", target, "--cron", "@daily", "--interval", "5"], "exactly one of --cron"),
        (["serve", target, "--interval", "5", "--overlap", "maybe"], "overlap must be one of"),
        (["schedule", "preview", target, "--cron", "* * *"], "Wrong number of fields"),
    ]
    config = tmp_path / "flows.toml"
    config.write_text('[[flow]]\ncron = "@daily"\n')
    cases.append((["serve", "--config", str(config)], "has a schedule but no flow"))
    outs = [run_cli_in_process(*args, home=tmp_path) for args, _ in cases]  # refused before serving: in this process
    for (args, message), out in zip(cases, outs):
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and message in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)


def test_schedule_preview_prints_local_and_utc_times(tmp_path):
    out = run_cli_in_process("schedule", "preview", "tests/flows.py:two_branches", "--cron", "0 6 * * *", "--timezone", "Europe/Berlin", "-n", "3", home=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [line.split("\t") for line in out.stdout.splitlines()]
    assert len(lines) == 3 and all(local.endswith(("T06:00:00+01:00", "T06:00:00+02:00")) for local, _ in lines)
    assert all(u.endswith(("T05:00:00Z", "T04:00:00Z")) for _, u in lines)


def _serve(home, address, *args):
    env = {**os.environ, "RAYFLOW_HOME": str(home), "RAY_ADDRESS": address}
    return subprocess.Popen(
        [sys.executable, "-m", "rayflow", "serve", "tests/flows.py:two_branches", "--address", address, *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )



def test_a_real_server_fires_runs_on_ray_and_stops_on_sigterm(tmp_path, ray_session):
    home = tmp_path / "home"
    server = _serve(home, ray_session, "--interval", "1", "-p", "seconds=0.1", "--grace", "20")
    try:
        store = RunStore(home)
        wait_for(lambda: len([r for r in store.runs() if r["state"] == "SUCCESS"]) >= 2, 90, "two scheduled runs")
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 0, err[-2000:]
    runs = RunStore(home).runs(limit=100)
    assert runs and all(r["schedule_id"] and r["scheduled_for"] for r in runs)
    assert all(r["state"] == "SUCCESS" for r in runs)  # the one in flight at SIGTERM finished within the grace
    assert "fired two_branches/" in err and "ended SUCCESS" in err
    listed = run_cli_in_process("schedules", home=home)
    assert listed.returncode == 0 and "two_branches/" in listed.stdout and "SUCCESS" in listed.stdout
    shown = run_cli_in_process("runs", home=home)
    assert "scheduled 20" in shown.stdout


def test_a_run_still_going_after_the_grace_period_is_cancelled(tmp_path, ray_session):
    home = tmp_path / "home"
    server = _serve(home, ray_session, "--interval", "1", "-p", "seconds=60", "--grace", "1")
    try:
        store = RunStore(home)
        wait_for(lambda: [r for r in store.runs() if r["state"] == "RUNNING"], 90, "a run in flight")
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 0, err[-2000:]
    assert "grace period over: cancelling 1 run(s)" in err
    runs = RunStore(home).runs()
    assert [r["state"] for r in runs] == ["CANCELLED"]


def test_flow_serve_once_fires_what_came_due_since_the_last_server(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "home"))
    local_flow = two_branches.with_options(runner="local")
    every = Interval(1, catchup="latest")
    assert local_flow.serve(every, {"seconds": 0.0}, once=True) == 0  # registers: nothing is due yet
    time.sleep(1.2)
    assert local_flow.serve(every, {"seconds": 0.0}, once=True) == 0  # fires since then were missed: the latest runs
    runs = RunStore(tmp_path / "home").runs()
    assert len(runs) >= 1 and all(r["state"] == "SUCCESS" and r["schedule_id"] for r in runs)
    with pytest.raises(rf.ParameterError):
        local_flow.serve(every, {"seconds": "never"}, once=True)


def test_a_config_file_serves_several_flows_and_names_its_mistakes(tmp_path):
    from rayflow.cli.serve import config_entries

    config = tmp_path / "flows.toml"
    config.write_text(
        f"""
[server]
max_concurrent = 2
grace = 5

[[flow]]
target = "{REPO}/tests/flows.py:two_branches"
cron = "0 6 * * 1-5"
timezone = "Europe/Paris"
overlap = "queue"
parameters = {{ seconds = 0.5 }}

[[flow]]
target = "{REPO}/tests/flows.py:two_branches"
interval = 300
catchup = "latest"
"""
    )
    found, server = config_entries(str(config))
    assert server == {"max_concurrent": 2, "grace": 5}
    (flow_a, cron, _, _), (_, interval, _, _) = found
    assert flow_a.name == "two_branches" and cron.describe() == "Cron('0 6 * * 1-5', timezone='Europe/Paris')"
    assert cron.overlap == "queue" and cron.parameters == {"seconds": 0.5} and interval.catchup == "latest"
    assert len({e.schedule_id for f, s, p, t in found for e in served(f, s, p, t)}) == 2
    from rayflow.cli.loader import TargetError

    target = f"{REPO}/tests/flows.py:two_branches"
    for text, message in [
        (f'[[flow]]\ntarget = "{target}"\ncron = "@daily"\ninterval = 5\n', "entry 1: give exactly one of"),
        (f'[[flow]]\ntarget = "{target}"\nevery = 5\n', "unknown key"),
        ('[[flow]]\ntarget = "nowhere.py:f"\ninterval = 5\n', "entry 1: no such file: nowhere.py"),
        ("[server]\nthreads = 3\n", "takes only"),
        ("[[flow]\n", "not valid TOML"),
    ]:
        config.write_text(text)
        with pytest.raises((ScheduleError, TargetError), match=message):
            config_entries(str(config))


def test_a_schedules_id_is_its_rule_parameters_and_flow_not_its_policies():
    def sid(schedule, parameters=None, target=None):
        (entry,) = served(two_branches, schedule, parameters, target=target)
        return entry.schedule_id

    base = sid(Interval(60))
    assert sid(Interval(60, overlap="queue", catchup="all", max_catchup=3)) == base  # a restart with new policies
    assert sid(Interval(60), {"seconds": 2.0}) != base
    assert sid(Interval(60, parameters={"seconds": 2.0})) == sid(Interval(60), {"seconds": 2.0})
    assert sid(Interval(60), target="a.py:two_branches") != sid(Interval(60), target="b.py:two_branches")
    assert sid(Interval(61)) != base and sid(Interval(60, timezone="Asia/Tokyo")) != base


def test_fire_times_never_go_back_in_a_repeated_hour():
    night = Cron("30 1 * * *", timezone="America/New_York")
    after = utc(2024, 11, 3, 6, 0)  # 01:00 EST, the second 01:00 of the night; 01:30 EDT (05:30Z) was earlier
    assert night.next_after(after) == utc(2024, 11, 4, 6, 30)
    for minute in range(0, 60, 7):
        t = utc(2024, 11, 3, 5, minute)
        assert night.next_after(t) > t


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Cron("0 30 2 * * *", timezone="America/New_York"), "seconds field, which follows no daylight-saving"),
        (lambda: Interval(float("nan")), "from 1 to 1e10, got nan"),
        (lambda: Interval(float("inf")), "from 1 to 1e10, got inf"),
        (lambda: Interval(1e20), "from 1 to 1e10, got 1e\\+20"),
        (lambda: Interval(dt.timedelta(seconds=-5)), "got -5s"),
        (lambda: Interval(60, anchor="yesterday"), "not an ISO date-time"),
        (lambda: Interval(60, anchor=dt.date(2026, 1, 1)), "anchor must be a datetime"),
    ],
)
def test_more_bad_schedules_are_named(make, message):
    with pytest.raises(ScheduleError, match=message):
        make()
    assert Cron("30 0 2 * * *").next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 2, 0, 30)  # seconds, in UTC
    assert Interval(60, anchor="2026-01-01T00:00:30").next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 0, 30)


def test_cli_options_that_would_be_ignored_with_a_config_and_bad_server_settings_are_refused(tmp_path):
    config = tmp_path / "flows.toml"
    config.write_text(f'[[flow]]\ntarget = "{REPO}/tests/flows.py:two_branches"\ninterval = 60\n')
    options = [
        (["--overlap", "queue"], "--overlap cannot be given too"),
        (["-p", "seconds=1"], "--param cannot be given too"),
        (["--max-concurrent", "0"], "max_concurrent must be a positive int"),
    ]
    bad_configs = [
        ('[server]\ngrace = "x"\n', "grace must be a number"),
        ('[[flow]]\ntarget = 5\ninterval = 60\n', "target must be a string"),
        (f'[[flow]]\ntarget = "{REPO}/tests/flows.py:two_branches"\ncron = "@daily"\nanchor = 2026-01-01T00:00:00\n', "anchor applies"),
        (f'[[flow]]\ntarget = "{REPO}/tests/flows.py:two_branches"\ninterval = nan\n', "from 1 to 1e10, got nan"),
    ]
    configs = []
    for i, (text, _) in enumerate(bad_configs):
        configs.append(tmp_path / f"bad-{i}.toml")
        configs[-1].write_text(text if "[[flow]]" in text else text + f'[[flow]]\ntarget = "{REPO}/tests/flows.py:two_branches"\ninterval = 60\n')
    # refused before serving: in this process (as test_bad_inputs.py's `serve` rows)
    option_outs = [run_cli_in_process("serve", "--config", str(config), *args, home=tmp_path) for args, _ in options]
    config_outs = [run_cli_in_process("serve", "--config", str(path), home=tmp_path) for path in configs]
    for (args, message), out in zip(options, option_outs):
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, (args, out.stderr)
    for (text, message), out in zip(bad_configs, config_outs):
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, (text, out.stderr)


LOCAL_SLOW = """
import time
import rayflow as rf

@rf.task
def nap(s: float) -> float:
    time.sleep(s)
    return s

@rf.flow(runner="local")
def slow(s: float = 60.0):
    return nap(s)
"""


def test_an_in_process_run_going_at_sigterm_is_cancelled_after_the_grace_and_the_server_exits(tmp_path):
    (tmp_path / "slow.py").write_text(LOCAL_SLOW)
    home = tmp_path / "home"
    server = subprocess.Popen(
        [sys.executable, "-m", "rayflow", "serve", f"{tmp_path}/slow.py:slow", "--interval", "1", "--grace", "1"],
        cwd=REPO, env={**os.environ, "RAYFLOW_HOME": str(home)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: (home / "history.db").exists() and [r for r in RunStore(home).runs() if r["state"] == "RUNNING"], 60, "a run")
        sent = time.time()
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 0, err[-2000:]
    assert time.time() - sent < 20  # not the 60 s the task sleeps
    assert [r["state"] for r in RunStore(home).runs()] == ["CANCELLED"]
    assert "exiting past 1 task thread(s)" in err


def test_schedules_lists_a_damaged_spec_without_failing(tmp_path):
    store = ScheduleStore(RunStore(tmp_path))
    store.register("f/abc", "f", None, {"kind": "interval"}, T0)
    with store.runs._connect() as db:
        db.execute("UPDATE schedules SET spec = 'not json' WHERE schedule_id = 'f/abc'")
    out = run_cli_in_process("schedules", home=tmp_path)
    assert out.returncode == 0 and "f/abc" in out.stdout and "unreadable" in out.stdout, out.stderr


def test_loading_a_file_already_imported_reuses_its_module():
    import flows

    from rayflow.core.loader import load_flow

    assert load_flow(f"{REPO}/tests/flows.py:two_branches") is flows.two_branches
    assert sys.modules["flows"] is flows  # its classes stay the ones the process knows


# -- bounds: intervals of a second or more, previews bounded and streamed ---------------------------


def test_an_interval_under_a_second_is_refused_however_it_arrives(tmp_path):
    for every in (0.001, 0.999, dt.timedelta(milliseconds=1)):
        with pytest.raises(ScheduleError, match="from 1 to 1e10"):
            Interval(every)
    with pytest.raises(ScheduleError, match="from 1 to 1e10"):
        from_spec({"kind": "interval", "every": 0.001, "anchor": "2026-01-01T00:00:00+00:00"})
    assert Interval(1).every == dt.timedelta(seconds=1) and Interval(1.5).every == dt.timedelta(seconds=1.5)
    config = tmp_path / "flows.toml"
    config.write_text(f'[[flow]]\ntarget = "{REPO}/tests/flows.py:two_branches"\ninterval = 0.5\n')
    for args in (["serve", "tests/flows.py:two_branches", "--interval", "0.001"], ["serve", "--config", str(config)],
                 ["schedule", "preview", "tests/flows.py:two_branches", "--interval", "0.001"]):
        out = run_cli_in_process(*args, home=tmp_path / "home")  # refused before anything: in this process
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, (args, out.stderr)
        assert out.stderr.startswith("error: ") and "every must be a number of seconds from 1 to 1e10, got 0." in out.stderr, out.stderr
    assert not (tmp_path / "home" / "history.db").exists()  # refused before anything was written


class CountingInterval(Interval):
    """An interval that counts the fire times asked of it."""

    asked = 0

    def next_after(self, after):
        type(self).asked += 1
        return super().next_after(after)


def test_preview_streams_its_lines_and_bounds_n(tmp_path):
    from rayflow.cli.serve import MAX_PREVIEW, preview_lines

    lines = preview_lines(CountingInterval(60), MAX_PREVIEW, after=utc(2026, 1, 1))
    first = next(iter(lines))
    assert first.endswith("2026-01-01T00:01:00Z") and CountingInterval.asked <= 2  # not all MAX_PREVIEW first
    out = run_cli_in_process("schedule", "preview", "tests/flows.py:two_branches", "--interval", "60", "-n", str(MAX_PREVIEW + 1), home=tmp_path)
    assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1, out.stderr
    assert f"at most {MAX_PREVIEW}" in out.stderr and "Traceback" not in out.stderr


# -- missed fires: an outage, a running server's own lateness, a server that died -------------------

HELD = ("claimed", "starting", "queued", "waiting (max_concurrent)")


def _fires(tmp_path, server) -> dict[float, str]:
    """Fire time (seconds after T0) -> outcome, of the one schedule served."""
    (entry,) = server.entries
    return {f["scheduled_for"] - T0: f["outcome"] for f in ScheduleStore(RunStore(tmp_path)).fires(entry.schedule_id)}


@pytest.mark.parametrize(
    "catchup, run",
    [("skip", []), ("latest", [62.0]), ("all", [58.0, 60.0, 62.0])],
)
def test_fires_missed_while_no_server_ran_follow_catchup_whatever_their_lateness(tmp_path, caplog, catchup, run):
    """A 53 s outage of a 2 s schedule: 26 fires, each under a minute late, all missed."""
    schedule = Interval(2, catchup=catchup, max_catchup=3, overlap="allow")
    clock = Clock(T0)
    first = _server(tmp_path, schedule, clock=clock, max_concurrent=100)
    clock.now = T0 + 10
    first.tick()  # fires 2..10 start; then the server is gone (it never ticks again)
    assert len(first.launcher.launched) == 5
    clock.now = T0 + 63
    again = _server(tmp_path, schedule, clock=clock, max_concurrent=100)
    with caplog.at_level("INFO", logger="rayflow.serve"):
        again.tick()
    assert [t - T0 for _, t, _ in again.launcher.launched] == run
    missed = {t: o for t, o in _fires(tmp_path, again).items() if t > 10}
    assert sorted(missed) == [12.0 + 2 * k for k in range(26)]  # each one has its row
    skipped = [t for t, o in missed.items() if o.startswith("skipped (missed") and f"catchup={catchup}" in o]
    assert len(skipped) == 26 - len(run) and not set(skipped) & set(run)
    assert f"26 missed fire(s) (catchup={catchup}" in caplog.text
    assert f"): {26 - len(run)} recorded skipped, {len(run)} taken up" in caplog.text
    clock.now = T0 + 64  # on time again
    again.tick()
    assert again.launcher.launched[-1][1] == T0 + 64


def test_a_running_servers_own_lateness_is_a_grace_then_its_fires_are_missed(tmp_path):
    clock = Clock(T0)
    server = _server(tmp_path, Interval(10, overlap="allow"), clock=clock, max_concurrent=100)  # catchup="skip"
    clock.now = T0 + 50  # a tick 40 s late (a stall): within the grace, every fire runs
    server.tick()
    assert [t - T0 for _, t, _ in server.launcher.launched] == [10.0, 20.0, 30.0, 40.0, 50.0]
    clock.now = T0 + 200  # 150 s late: fires more than 60 s late were missed
    server.tick()
    assert [t - T0 for _, t, _ in server.launcher.launched][5:] == [140.0, 150.0, 160.0, 170.0, 180.0, 190.0, 200.0]
    outcomes = _fires(tmp_path, server)
    assert all(outcomes[t].startswith("skipped (missed") for t in (60.0, 90.0, 130.0))


def _queue_then_die(tmp_path, catchup, clock):
    """Server A runs the fire at 10 and queues those at 20, 30, 40 and 50; then it dies."""
    first = _server(tmp_path, Interval(10, overlap="queue", catchup=catchup), clock=clock)
    for second in (10, 20, 30, 40, 50):
        clock.now = T0 + second
        first.tick()
    assert _fires(tmp_path, first) == {10.0: "started", 20.0: "queued", 30.0: "queued", 40.0: "queued", 50.0: "queued"}
    return first


def test_fires_queued_by_a_server_that_died_are_taken_up_in_order_before_later_fires(tmp_path):
    clock = Clock(T0)
    _queue_then_die(tmp_path, "all", clock)
    clock.now = T0 + 100  # its lease (30 s of heartbeats) ran out: the next server takes its fires over
    again = _server(tmp_path, Interval(10, overlap="queue", catchup="all"), clock=clock)
    for step in range(20):
        again.tick()
        for _, _, handle in again.launcher.launched:
            handle.finished = "SUCCESS"
        clock.now += 0.5
    assert [t - T0 for _, t, _ in again.launcher.launched][:9] == [20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    outcomes = _fires(tmp_path, again)
    assert outcomes[10.0] == "started"  # its run's own record says how it ended
    assert [outcomes[t] for t in (20.0, 30.0, 40.0, 50.0, 60.0, 100.0)] == ["ended SUCCESS"] * 6
    assert not [t for t, o in outcomes.items() if o in HELD]


def test_fires_held_by_a_dead_server_follow_catchup_and_a_live_servers_are_left_to_it(tmp_path):
    clock = Clock(T0)
    first = _queue_then_die(tmp_path, "skip", clock)
    clock.now = T0 + 55  # A ticked 5 s ago: alive, its queue is its own
    other = _server(tmp_path, Interval(10, overlap="queue"), clock=clock)
    other.tick()
    assert other.launcher.launched == [] and _fires(tmp_path, first)[20.0] == "queued"
    first.launcher.launched[0][2].finished = "SUCCESS"
    first.tick()  # A is still there: it starts its next queued fire itself
    assert [t - T0 for _, t, _ in first.launcher.launched] == [10.0, 20.0]
    clock.now = T0 + 200  # then A dies; with catchup="skip" what it held is recorded skipped
    later = _server(tmp_path, Interval(10, overlap="queue"), clock=clock)
    later.tick()
    outcomes = _fires(tmp_path, later)
    assert all(outcomes[t].startswith("skipped (missed: its server died") for t in (30.0, 40.0, 50.0)), outcomes
    assert not [t for t, o in outcomes.items() if o in HELD]


class DyingLauncher(FakeLauncher):
    """The process dies as it starts a run: the fire was claimed but never started."""

    def launch(self, entry, scheduled_for, run_id):
        raise SystemExit(137)


def test_a_fire_claimed_but_never_started_is_taken_up_once_by_racing_servers(tmp_path):
    clock = Clock(T0)
    dying = _server(tmp_path, Interval(10, catchup="all"), clock=clock, launcher=DyingLauncher())
    clock.now = T0 + 10
    with pytest.raises(SystemExit):
        dying.tick()
    clock.now = T0 + 45
    launcher = FakeLauncher()
    servers = [_server(tmp_path, Interval(10, catchup="all", overlap="allow"), launcher=launcher, clock=clock) for _ in range(2)]
    threads = [threading.Thread(target=s.tick) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(t - T0 for _, t, _ in launcher.launched) == [10.0, 20.0, 30.0, 40.0]  # each once


HELD_FLOW = """
import pathlib
import time
import rayflow as rf

@rf.task
def hold(path: str) -> str:
    while pathlib.Path(path).exists():  # a run lasts while the file is there
        time.sleep(0.05)
    return path

@rf.flow(runner="local")
def held(path: str = ""):
    return hold(path)
"""


def _fire_rows(home) -> list[dict]:
    with RunStore(home)._connect() as db:
        return [dict(r) for r in db.execute(
            "SELECT s.scheduled_for, s.outcome, s.run_id, r.started_at FROM scheduled_runs AS s "
            "LEFT JOIN runs AS r ON r.run_id = s.run_id ORDER BY s.scheduled_for")]


def test_fires_queued_by_a_sigkilled_server_are_taken_up_by_the_next_in_order(tmp_path):
    (tmp_path / "held.py").write_text(HELD_FLOW)
    home, hold = tmp_path / "home", tmp_path / "hold"
    hold.write_text("")
    args = [sys.executable, "-m", "rayflow", "serve", f"{tmp_path}/held.py:held", "--interval", "1",
            "--overlap", "queue", "--catchup", "all", "-p", f"path={hold}"]
    env = {**os.environ, "RAYFLOW_HOME": str(home)}

    def start():
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start()
    try:
        wait_for(lambda: (home / "history.db").exists() and
                 len([r for r in _fire_rows(home) if r["outcome"] == "queued"]) >= 3, 90, "three queued fires")
    finally:
        first.kill()  # SIGKILL: no clean-up at all
        first.wait()  # (reaped, as a shell would: a zombie's pid still answers)
    held = [r["scheduled_for"] for r in _fire_rows(home) if r["outcome"] == "queued"]
    last_before = max(r["scheduled_for"] for r in _fire_rows(home))
    hold.unlink()
    second = start()
    try:
        def settled():
            rows = [r for r in _fire_rows(home) if r["scheduled_for"] <= last_before + 4]
            return rows and not [r for r in rows if r["outcome"] in HELD or r["outcome"] == "started"][1:]
        wait_for(settled, 120, "the dead server's fires taken up")
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=60)
    finally:
        second.kill()
    rows = {r["scheduled_for"]: r for r in _fire_rows(home)}
    assert all(rows[t]["outcome"] == "ended SUCCESS" for t in held), [rows[t] for t in held]
    later = [t for t in rows if t > last_before and rows[t]["started_at"]]
    assert later, "no later fire ran"
    started = sorted((r["started_at"], t) for t, r in rows.items() if r["started_at"] and t >= held[0])
    assert [t for _, t in started] == sorted(t for _, t in started)  # the held ones first, in order
    assert "taken over from a server that died" in err, err[-3000:]


def test_a_long_outage_is_recorded_in_bounded_rows(tmp_path, caplog):
    from rayflow.serving.server import RECORDED_ONE_BY_ONE

    schedule = Interval(1, catchup="all", max_catchup=3, overlap="allow")
    clock = Clock(T0)
    _server(tmp_path, schedule, clock=clock).tick()
    clock.now = T0 + 3001  # 3000 fires missed (plus the one due now)
    again = _server(tmp_path, schedule, clock=clock, max_concurrent=10)
    with caplog.at_level("INFO", logger="rayflow.serve"):
        again.tick()
    assert [t - T0 for _, t, _ in again.launcher.launched] == [2998.0, 2999.0, 3000.0, 3001.0]
    rows = _fires(tmp_path, again)
    assert len(rows) == RECORDED_ONE_BY_ONE + 1 + 4  # one row each for the latest, one for the rest
    summary = rows[1.0]
    assert summary.startswith("skipped (missed, catchup=all, over max_catchup 3; with the 1996 missed fire(s) after it until"), summary
    assert "3000 missed fire(s) (catchup=all, max_catchup 3): 2997 recorded skipped, 3 taken up (3 started)" in caplog.text


def test_a_fire_left_queued_by_an_older_rayflow_is_taken_up_after_the_upgrade(tmp_path):
    """A history from before servers were recorded: no `server` column, a fire queued forever."""
    store = ScheduleStore(RunStore(tmp_path))
    schedule = Interval(10, overlap="queue", catchup="all")
    (entry,) = served(two_branches, schedule)
    store.register(entry.schedule_id, "two_branches", None, schedule.spec(), T0)
    store.advance(entry.schedule_id, T0 + 12, None)  # its server went past the fire, then died
    with store.runs._connect() as db:
        db.execute("DROP TABLE servers")
        db.execute("ALTER TABLE scheduled_runs DROP COLUMN server")
        db.execute("INSERT INTO scheduled_runs VALUES (?, ?, NULL, 'queued', ?)", [entry.schedule_id, T0 + 10, time.time() - 600])
        db.execute("PRAGMA user_version = 4")
    clock = Clock(T0 + 15)
    server = _server(tmp_path, schedule, clock=clock)  # opens (and upgrades) the history
    server.tick()
    assert [t - T0 for _, t, _ in server.launcher.launched] == [10.0]
    assert _fires(tmp_path, server) == {10.0: "started"}


def test_fires_waiting_for_a_slot_when_their_server_died_run_next_in_order(tmp_path):
    clock = Clock(T0)
    schedule = Interval(10, overlap="allow", catchup="all")
    first = _server(tmp_path, schedule, clock=clock, max_concurrent=1)
    for second in (10, 20, 30):
        clock.now = T0 + second
        first.tick()
    assert _fires(tmp_path, first) == {10.0: "started", 20.0: "waiting (max_concurrent)", 30.0: "waiting (max_concurrent)"}
    clock.now = T0 + 70  # 40 s without a heartbeat: dead
    again = _server(tmp_path, schedule, clock=clock, max_concurrent=1)
    for _ in range(10):
        again.tick()
        for _, _, handle in again.launcher.launched:
            handle.finished = "SUCCESS"
        clock.now += 0.5
    assert [t - T0 for _, t, _ in again.launcher.launched][:6] == [20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
    assert not [t for t, o in _fires(tmp_path, again).items() if o in HELD]


def test_a_dead_servers_fires_go_before_the_later_fires_a_live_server_already_queued(tmp_path):
    """Found in review: fires taken over were appended after the taker's own queue (it ran 30,
    50, 60, 70, 80, then 20, 40).  They go in by their time, before every later fire."""
    clock = Clock(T0)
    schedule = Interval(10, overlap="queue", catchup="all")
    dying = _server(tmp_path, schedule, clock=clock, host="elsewhere")  # A: another host, no pid to check
    clock.now = T0 + 10
    dying.tick()  # A starts 10
    clock.now = T0 + 20
    dying.tick()  # and queues 20; then A dies (no more heartbeats)
    clock.now = T0 + 25
    taker = _server(tmp_path, schedule, clock=clock)  # B serves alongside (A beat 5 s ago)
    for second in (30, 40, 50, 60):
        clock.now = T0 + second
        taker.tick()  # B starts 30 and queues 40, 50, 60 behind it
    assert [t - T0 for _, t, _ in taker.launcher.launched] == [30.0]
    clock.now = T0 + 61  # A's lease (30 s without a heartbeat) has run out: B takes 20 over
    taker.tick()
    for _ in range(6):
        for _, _, handle in taker.launcher.launched:
            handle.finished = "SUCCESS"
        clock.now += 0.5
        taker.tick()
    assert [t - T0 for _, t, _ in taker.launcher.launched] == [30.0, 20.0, 40.0, 50.0, 60.0]


def test_a_server_killed_elsewhere_within_its_lease_does_not_make_the_outage_on_time(tmp_path):
    """Found in review: a server on another host killed 20 s ago is still within its 30 s lease
    (no pid to check there), and the next server counted it as serving all along: the outage's
    fires, under a minute late, ran as on time (the issue's burst, back).  A server counts as
    serving along only if its heartbeat is fresh."""
    clock = Clock(T0)
    schedule = Interval(2, overlap="allow")  # catchup="skip"
    gone = _server(tmp_path, schedule, clock=clock, host="elsewhere", max_concurrent=100)
    clock.now = T0 + 4
    gone.tick()  # fires 2 and 4; then it is killed
    clock.now = T0 + 25  # 21 s later, within its lease
    again = _server(tmp_path, schedule, clock=clock, max_concurrent=100)
    again.tick()
    assert again.launcher.launched == []  # 6..24 were missed: skip runs none
    outcomes = _fires(tmp_path, again)
    assert all(outcomes[float(t)].startswith("skipped (missed") for t in range(6, 25, 2)), outcomes


def test_a_stalled_server_does_not_overwrite_the_fire_another_server_took_over(tmp_path):
    """Found in review: `settle` wrote whatever server called it, so a server that stalled past
    its lease (thought dead, its fire taken over and started by another) then overwrote the
    other's row with its own run.  A fire's outcome is written by the server that holds it."""
    store = ScheduleStore(RunStore(tmp_path))
    store.register("s/1", "f", None, {"kind": "interval", "every": 10.0, "anchor": "2020-01-01T00:00:00+00:00"}, T0)
    assert store.claim("s/1", T0 + 10, None, "claimed", "stalled")
    assert store.hold("s/1", T0 + 10, "starting", "stalled", "run-a")
    assert store.adopt("s/1", T0 + 10, "stalled", "taker")  # run-a never reached the history
    assert store.hold("s/1", T0 + 10, "starting", "taker", "run-b") and store.settle("s/1", T0 + 10, "started", "taker", "run-b")
    assert not store.settle("s/1", T0 + 10, "started", "stalled", "run-a")
    (fire,) = store.fires("s/1")
    assert (fire["outcome"], fire["run_id"], fire["server"]) == ("started", "run-b", "taker")
