"""The fault suite: each fault injected on real Ray; the run either ends as an uninterrupted run
would, or ends in a clear state with a clear error — never hangs, never leaves a run RUNNING.

Here: the orchestrating actor killed (2), the driver SIGKILLed mid-map (3), the history
locked, damaged, a file or unwritable (4), Ctrl-C and SIGTERM during a large map (6), and an
unpicklable return value.  Workers killed during a map and tasks, object store pressure and
concurrent runs (1, 5, 8) are in test_fault_load.py; an item that crashes its worker or runs
out of memory (7) in test_ray_worker_deaths.py; the OTLP collector down or hanging (9) in
test_tracing.py; the history writer's own faults in test_history_faults.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import ray
from flows import adds, diamond, diamond_calc, long_flow

import rayflow as rf
from rayflow.runs.resume import check_resumable
from rayflow.runtime.driver import actors as actor_module
from rayflow.runtime.driver.actors import driver_actor
from rayflow.store import RunStore
from cli_runner import run_cli, run_cli_in_process
from waiting import alive, read_until, wait_for

pytestmark = pytest.mark.usefixtures("ray_session")
REPO = pathlib.Path(__file__).resolve().parent.parent


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
    killed = driver_actor()
    ray.kill(killed, no_restart=True)
    wait_for(lambda: _dead(killed), what="the killed actor to be gone")  # ray.kill returns before it is
    # The actor is gone and no run has noticed.  A driver pings an actor idle longer than
    # IDLE_CHECK_SECONDS before giving it a run: with the threshold at 0 it is idle already
    # (was: a 2.5 s sleep past the real threshold).
    monkeypatch.setattr(actor_module, "IDLE_CHECK_SECONDS", 0.0)
    assert adds.run(x=1).result() == 3  # it was pinged first, found dead and replaced
    assert adds.run(x=2).result() == 4


def _dead(handle) -> bool:
    try:
        ray.get(handle.ping.remote(), timeout=5)
    except ray.exceptions.RayActorError:
        return True
    except ray.exceptions.GetTimeoutError:
        pass
    return False


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
    """`timeout` and systemd signal every process of the group, the local Ray the CLI started
    too.  Where the driver's handler comes first, it records the run CANCELLED itself and exits
    143 without waiting for the gone Ray; where Ray's raylet goes first, Ray's core worker ends
    the driver at once (exit 1, "connection to the plasma store is failed") and the run reads
    CRASHED.  Either way: a prompt exit, nothing left running, no run left RUNNING."""
    out, took, state = _signal_during_large_map(tmp_path, signal.SIGTERM, [], group=True)
    print(f"SIGTERM to the group to exit: {took:.2f}s, exit {out.returncode}, run {state}")
    assert "Traceback" not in out.stderr
    if out.returncode == 143:
        assert "error: terminated (SIGTERM)" in out.stderr
        assert state == "CANCELLED"
    else:
        assert out.returncode == 1, out.stderr[-3000:]
        assert RunStore(tmp_path / "home").run("signalled-15")["state"] == "CRASHED"  # read as every reader decides
    assert took < 15


def test_the_sigterm_watchdog_exits_143_when_the_stop_hangs(tmp_path):
    """A stop that hangs after SIGTERM still exits 143, named, once the watchdog's time is up.
    Here the main thread never even runs the Python handler: it blocks SIGTERM and sleeps, so
    the signal reaches the watchdog's thread, which learns of it from the wakeup fd alone."""
    script = tmp_path / "stuck.py"
    # 'ready' comes from another thread once the main one sleeps: a signal that came while the
    # main thread still ran Python (returning from print) would have its handler run there
    script.write_text(
        "import signal, threading, time\n"
        "from rayflow.cli.signals import sigterm_as_interrupt\n"
        "with sigterm_as_interrupt('run stuck', watchdog=1.0):\n"
        "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # this thread only\n"
        "    threading.Timer(0.5, lambda: print('ready', flush=True)).start()\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "ready"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    assert "run stuck had not stopped after 1s" in stderr and "Traceback" not in stderr
    assert took < 10


# -- 4. the history database locked, damaged, a file, on a path that cannot be written ----------


def _run_diamond(home: pathlib.Path, address: str, run_id: str) -> subprocess.CompletedProcess:
    out = run_cli("run", "tests/flows.py:diamond", "--address", address, "--run-id", run_id, home=home)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"loaded": 20' in out.stdout and "state: SUCCESS" in out.stdout
    return out


def _history_with_a_run(home: pathlib.Path, run_id: str, monkeypatch) -> None:
    """A history at ``home`` holding one ended run, made here by a local run of the same flow
    (the set-up of the tests below; was a `rayflow run` of its own, seconds of start-up), its
    write-ahead log then copied into the database file as the last connection of an exiting
    process would (so the file holds the rows a damage below hits)."""
    import gc

    monkeypatch.setenv("RAYFLOW_HOME", str(home))
    assert diamond.with_options(run_id=run_id, runner="local").run().result() == diamond_calc()
    assert RunStore(home).run_state(run_id) == "SUCCESS"
    gc.collect()  # the run's own connections, closed
    db = sqlite3.connect(RunStore(home).path, isolation_level=None)
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        db.close()


@pytest.mark.timeout(240)
def test_a_history_locked_for_the_whole_run_is_written_by_a_later_run(tmp_path, ray_session, monkeypatch):
    """Another process holds the history locked while `rayflow run` runs and exits: the run
    completes; its rows wait in a file beside the history, and the next run writes them."""
    home = tmp_path / "home"
    _history_with_a_run(home, "before-lock", monkeypatch)
    lock = sqlite3.connect(RunStore(home).path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        out = _run_diamond(home, ray_session, "while-locked")
        print(f"run with a locked history: {time.monotonic() - started:.1f}s")
        assert "Traceback" not in out.stderr
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert RunStore(home).run_state("while-locked") is None  # its driver and actor are gone
    assert list((home / "history-pending").glob("while-locked-*.json"))
    # the next run, a local one in this process (was a `rayflow run` on Ray: seconds of start-up)
    assert diamond.with_options(run_id="after-lock", runner="local").run().result() == diamond_calc()
    store = RunStore(home)
    wait_for(lambda: store.run_state("while-locked") == "SUCCESS", timeout=30, what="the kept rows to be written")
    assert {t["task_key"] for t in store.run("while-locked")["transitions"]} == {"extract", "clean", "audit", "load"}
    wait_for(lambda: not list((home / "history-pending").glob("*.json")), timeout=30, what="the kept rows' file to go")


@pytest.mark.timeout(240)
def test_a_damaged_history_is_moved_aside_and_the_run_recorded_in_a_new_one(tmp_path, ray_session, monkeypatch):
    home = tmp_path / "home"
    _history_with_a_run(home, "before-damage", monkeypatch)
    path = RunStore(home).path
    data = bytearray(path.read_bytes())
    for offset in range(0, min(len(data), 4 * 4096), 7):
        data[offset] = 0x5A
    path.write_bytes(bytes(data))
    out = run_cli_in_process("runs", home=home)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "not a database" in out.stderr
    _run_diamond(home, ray_session, "after-damage")
    aside = [p.name for p in home.glob("history.db.damaged-*")]
    assert len([n for n in aside if not n.endswith(("-wal", "-shm"))]) == 1, aside  # one database (with its journal files)
    out = run_cli_in_process("runs", home=home)
    assert out.returncode == 0 and "after-damage" in out.stdout and "before-damage" not in out.stdout


HOMELESS = {  # where the history cannot be: (RAYFLOW_HOME, what each command says)
    "a file": (None, "is a file, not a directory"),
    "a path that cannot be made": (pathlib.Path("/proc/rayflow-no-such-home"),  # not writable even by root
                                   "cannot use the run history at /proc/rayflow-no-such-home"),
}


@pytest.fixture(scope="module")
def homeless_runs(ray_session, tmp_path_factory) -> dict:
    """A `rayflow run` with each HOMELESS history, both at once (each is seconds of start-up and of
    waiting on Ray): by ``where``, (home, the run's output)."""
    import concurrent.futures

    homes = {}
    for where, (home, _) in HOMELESS.items():
        if home is None:
            home = tmp_path_factory.mktemp("homeless") / "home-file"
            home.write_text("")
        homes[where] = home
    with concurrent.futures.ThreadPoolExecutor(len(homes)) as pool:
        done = {where: pool.submit(_run_diamond, home, ray_session, f"homeless-{len(where)}") for where, home in homes.items()}
        return {where: (homes[where], future.result()) for where, future in done.items()}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("where", list(HOMELESS))
def test_a_run_completes_when_its_history_cannot_be_used_and_the_cli_says_why_in_one_line(homeless_runs, where):
    home, out = homeless_runs[where]  # the run completed (_run_diamond checks its result)
    expected = HOMELESS[where][1]
    assert "Traceback" not in out.stderr
    for args in (["runs"], ["show", "homeless"], ["logs", "homeless"]):
        out = run_cli_in_process(*args, home=home)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and expected in out.stderr, (args, out.stderr)


# -- 3. the driver SIGKILLed mid-map --------------------------------------------------------------


@pytest.mark.timeout(240)
def test_a_driver_killed_mid_map_reads_crashed_everywhere_and_every_follower_ends(tmp_path, ray_session):
    from starlette.testclient import TestClient

    from rayflow.ui import create_app

    home, pid_dir = tmp_path / "home", tmp_path / "pids"
    pid_dir.mkdir()
    env = {**os.environ, "RAYFLOW_HOME": str(home)}
    cli = [sys.executable, "-m", "rayflow"]
    driver = subprocess.Popen(
        [*cli, "run", "tests/flows.py:large_map", "-p", f"pid_dir={pid_dir}", "--run-id", "killed-driver",
         "--address", ray_session], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    followers, outputs = [], []
    try:
        wait_for(lambda: len(list(pid_dir.glob("*.pid"))) >= 2, timeout=90, what="the map's workers")
        wait_for(lambda: RunStore(home).run_state("killed-driver") == "RUNNING", timeout=30)
        followers = [
            subprocess.Popen([*cli, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for args in (["logs", "killed-driver", "--follow"], ["show", "killed-driver", "--watch", "--address", ray_session])
        ]
        read_until(followers[0].stderr, "following the logs of run killed-driver (RUNNING)")  # each says it follows
        read_until(followers[1].stdout, "state: RUNNING (live)")
        assert all(f.poll() is None for f in followers), "the followers should still be following"
        driver.kill()
        driver.wait(10)
        for follower in followers:
            outputs.append(follower.communicate(timeout=60)[0])  # each ends on its own
            assert follower.returncode == 0, follower.stderr.read()[-2000:] if follower.stderr else ""
    finally:
        for proc in [driver, *followers]:
            if proc.poll() is None:
                proc.kill()
    assert "CRASHED" in outputs[1], outputs[1]
    assert RunStore(home).run("killed-driver")["state"] == "CRASHED"
    assert RunStore(home).runs()[0]["state"] == "CRASHED"
    out = run_cli_in_process("runs", home=home)
    assert "killed-driver\tlarge_map\tCRASHED" in out.stdout, out.stdout
    page = TestClient(create_app(home), base_url="http://127.0.0.1:4200").get("/runs/killed-driver")  # a Host the UI answers
    assert page.status_code == 200 and "CRASHED" in page.text and "RUNNING</" not in page.text
    workers = [int(p.read_text()) for p in pid_dir.glob("*.pid")]
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=30, what="the map's workers to be gone")


@pytest.mark.timeout(240)
def test_every_filter_and_listing_reads_a_killed_drivers_run_as_crashed_as_show_does(tmp_path, ray_session):
    """A driver SIGKILLed mid-run leaves its run RUNNING in the history; readers decide it is
    CRASHED (its driver is gone).  Every filter and listing must decide the same as `show`:
    `runs --state CRASHED` finds it, `--state RUNNING` does not, nor does the UI's filter, and
    `rayflow schedules` (its fire recorded as `rayflow serve` records one) lists it CRASHED."""
    from starlette.testclient import TestClient

    from rayflow.store.schedules import ScheduleStore
    from rayflow.ui import create_app

    home, pid_dir = tmp_path / "home", tmp_path / "pids"
    pid_dir.mkdir()
    env = {**os.environ, "RAYFLOW_HOME": str(home)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "rayflow", "run", "tests/flows.py:long_flow", "-p", f"pid_dir={pid_dir}",
         "--run-id", "killed-run", "--address", ray_session], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(list(pid_dir.glob("*.pid"))) >= 2, timeout=90, what="the run's sleepers")
        wait_for(lambda: RunStore(home).run_state("killed-run") == "RUNNING", timeout=30)
    finally:
        driver.kill()
        driver.wait(10)
    schedules = ScheduleStore(RunStore(home))
    schedules.register("every-hour", "long_flow", "tests/flows.py:long_flow", rf.schedules.Interval(3600).spec(), time.time())
    assert schedules.claim("every-hour", time.time(), "killed-run", "started")
    assert RunStore(home).run_state("killed-run") == "RUNNING"  # as recorded: the reading decides

    shown = run_cli_in_process("show", "killed-run", home=home)
    assert "state: CRASHED" in shown.stdout, shown.stdout
    crashed = run_cli_in_process("runs", "--state", "CRASHED", home=home)
    assert "killed-run\tlong_flow\tCRASHED" in crashed.stdout, crashed.stdout
    running = run_cli_in_process("runs", "--state", "running", home=home)
    assert running.returncode == 0 and "killed-run" not in running.stdout, running.stdout
    client = TestClient(create_app(home), base_url="http://127.0.0.1:4200")  # a Host the UI answers
    assert [r["run_id"] for r in client.get("/api/runs?state=CRASHED").json()] == ["killed-run"]
    assert client.get("/api/runs?state=RUNNING").json() == []
    assert "killed-run" in client.get("/runs?state=CRASHED").text
    listed = run_cli_in_process("schedules", home=home)
    assert listed.stdout.splitlines()[1].split("\t")[4] == "CRASHED", listed.stdout
    assert json.loads(run_cli_in_process("schedules", "--json", home=home).stdout)[0]["last"]["state"] == "CRASHED"
    workers = [int(p.read_text()) for p in pid_dir.glob("*.pid")]
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=30, what="the run's sleepers to be gone")


# -- an unpicklable return value ---------------------------------------------------------------


UNPICKLABLE = '''
import sys, threading
import rayflow as rf

@rf.task
def lock():
    return threading.Lock()

@rf.task
def maybe_lock(i):
    return threading.Lock() if i == 1 else i

@rf.flow
def plain():
    return lock()

@rf.flow
def mapped():
    return maybe_lock.map(range(3))

for flow in (plain, mapped):
    run = flow.with_options(address=sys.argv[1]).run()
    for key, state in run.task_states.items():
        print(key, state.type.value, state.message, flush=True)
'''


@pytest.mark.timeout(120)
def test_an_unpicklable_return_value_fails_its_task_or_item_alone_without_ray_noise(tmp_path, ray_session):
    script = tmp_path / "unpicklable.py"
    script.write_text(UNPICKLABLE)
    out = subprocess.run([sys.executable, str(script), ray_session], capture_output=True, text=True, timeout=100,
                         cwd=REPO, env={**os.environ, "RAYFLOW_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["lock"].startswith("FAILED") and "cannot pickle '_thread.lock' object" in lines["lock"]
    assert lines["maybe_lock"].startswith("FAILED 3 items: 2 ok, 1 failed; first error: item 1: TypeError: "
                                          "its return value cannot be pickled"), lines["maybe_lock"]
    assert "Unhandled error" not in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]
