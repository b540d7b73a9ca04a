"""Failure handling that only real Ray can show: slots, killed workers, hung tasks, cancellation."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from flows import long_flow, sleeper, timed_sleep
from cli_runner import run_cli_in_process
from waiting import alive

import rayflow as rf
from rayflow.states import StateType as T

pytestmark = pytest.mark.usefixtures("ray_session")
REPO = pathlib.Path(__file__).resolve().parent.parent


def wait_for_files(directory: pathlib.Path, names: list[str], timeout: float = 60) -> dict[str, int]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = {n: directory / f"{n}.pid" for n in names}
        if all(p.exists() and p.read_text() for p in found.values()):
            return {n: int(p.read_text()) for n, p in found.items()}
        time.sleep(0.05)
    raise AssertionError(f"tasks {names} did not start within {timeout}s")


def assert_all_gone(pids: dict[str, int], timeout: float = 15) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and any(alive(p) for p in pids.values()):
        time.sleep(0.1)
    assert not [n for n, p in pids.items() if alive(p)], "worker processes of the run are still running"


@rf.task
def fail_once(marker: str) -> str:
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError("first attempt fails")
    return "second attempt"


def test_retry_delay_holds_no_worker_slot(tmp_path):
    """
    fail_once (1 CPU, retry in 2 s)     filler x4 (1 CPU, 1 s each)

    While fail_once waits for its retry, two fillers run at the same time:
    both CPUs are free, so the delay is not a sleep inside a worker.  (1 s each: a worker
    that starts a few tenths late on a loaded machine still overlaps by far more than jitter.)
    """

    @rf.flow
    def busy():
        flaky = fail_once.with_options(retries=1, retry_delay=2.0)(str(tmp_path / "marker"))
        fillers = [timed_sleep(1.0, f"f{i}") for i in range(4)]
        return flaky, fillers

    run = busy.run()
    result, fillers = run.result()
    assert result == "second attempt"
    history = run.history("fail_once")
    window_start = next(s for s in history if s.type is T.RETRYING).finished_at
    window_end = [s for s in history if s.type is T.RUNNING][-1].timestamp
    assert window_end - window_start >= 1.9
    overlaps = [
        min(a["end"], b["end"]) - max(a["start"], b["start"], window_start)
        for i, a in enumerate(fillers)
        for b in fillers[i + 1 :]
        if min(a["end"], b["end"]) <= window_end
    ]
    assert max(overlaps) > 0.3, (window_start, window_end, fillers)


def test_hung_task_is_killed_at_its_timeout_and_its_cpus_reused(tmp_path):
    """
    hang (2 CPUs, sleeps forever, timeout 1 s) ···> after (2 CPUs, always_run)
    """

    @rf.flow
    def hung():
        stuck = sleeper.with_options(name="hang", num_cpus=2, timeout=1.0)(str(tmp_path), "hang", 3600)
        return timed_sleep.with_options(num_cpus=2, trigger=rf.triggers.always_run)(0.0, "after", wait_for=[stuck])

    holder = {}
    thread = threading.Thread(target=lambda: holder.setdefault("run", hung.run()))
    thread.start()
    pid = wait_for_files(tmp_path, ["hang"])["hang"]
    thread.join(60)
    run = holder["run"]
    hang = run.task_states["hang"]
    assert hang.type is T.TIMED_OUT and "timed out after 1s" in hang.message
    after = run.task_result("timed_sleep")
    assert after["start"] >= hang.started_at + 1.0
    assert_all_gone({"hang": pid})
    assert not (tmp_path / "hang.done").exists()


def test_killed_worker_is_retried_as_a_system_error(tmp_path):
    """A worker killed mid-task (SIGKILL from outside) is retried under system_retries, with retries=0."""

    @rf.task(retries=0)
    def victim(pid_dir: str) -> int:
        marker = os.path.join(pid_dir, "first.pid")
        if not os.path.exists(marker):
            with open(marker, "w") as fh:
                fh.write(str(os.getpid()))
            time.sleep(60)
        return os.getpid()

    @rf.flow
    def fragile():
        return victim(str(tmp_path))

    holder = {}
    thread = threading.Thread(target=lambda: holder.setdefault("run", fragile.run()))
    thread.start()
    first_pid = wait_for_files(tmp_path, ["first"])["first"]
    os.kill(first_pid, signal.SIGKILL)
    thread.join(60)
    run = holder["run"]
    state = run.task_states["victim"]
    assert state.type is T.SUCCESS and state.attempt == 2
    assert run.result() != first_pid
    retrying = [s for s in run.history("victim") if s.type is T.RETRYING]
    assert len(retrying) == 1
    assert retrying[0].error.system is True and "system retry 1 of 3" in retrying[0].message


def rayflow_cancel(run_id: str, address: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rayflow", "cancel", run_id, "--address", address],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_rayflow_cancel_from_another_process_leaves_nothing_running(tmp_path, ray_session):
    holder = {}
    flow = long_flow.with_options(run_id="to-cancel-1")
    thread = threading.Thread(target=lambda: holder.setdefault("run", flow.run(pid_dir=str(tmp_path))))
    thread.start()
    pids = wait_for_files(tmp_path, ["a", "b"])
    out = rayflow_cancel("to-cancel-1", ray_session)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "run to-cancel-1: CANCELLED" in out.stdout
    thread.join(30)
    run = holder["run"]
    assert run.state.type is T.CANCELLED
    assert {s.type for s in run.task_states.values()} == {T.CANCELLED}
    assert_all_gone(pids)
    # No wait needed to show they wrote nothing more: the tasks' processes are gone and the run
    # has returned with every task CANCELLED, so nothing is left that could write.
    assert not list(tmp_path.glob("*.done")) and not (tmp_path / "after.pid").exists()


def test_cancelling_an_unknown_run_exits_1(ray_session):
    # in this process, which has joined the cluster (a refusal: the real process is the test above's)
    out = run_cli_in_process("cancel", "never-ran", "--address", ray_session)
    assert out.returncode == 1 and "never-ran" in out.stderr


def _interrupt(cmd: list[str], pid_dir: pathlib.Path) -> tuple[subprocess.CompletedProcess, dict[str, int]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        pids = wait_for_files(pid_dir, ["a", "b"])
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), pids


def test_ctrl_c_on_rayflow_run_cancels_the_run(tmp_path, ray_session):
    cmd = [sys.executable, "-m", "rayflow", "run", "tests/flows.py:long_flow", "-p", f"pid_dir={tmp_path}", "--address", ray_session]
    out, pids = _interrupt(cmd, tmp_path)
    assert out.returncode == 130, out.stdout + out.stderr[-3000:]
    assert "was cancelled" in out.stderr and "Traceback" not in out.stderr
    assert "sleeper\tCANCELLED" in out.stdout and "state: CANCELLED" in out.stdout
    assert_all_gone(pids)


def test_ctrl_c_in_flow_run_cancels_and_propagates(tmp_path, ray_session):
    script = textwrap.dedent(
        f"""
        import sys; sys.path.insert(0, "tests")
        import flows, rayflow as rf
        try:
            flows.long_flow.with_options(address={ray_session!r}, run_id="py-interrupt").run(pid_dir={str(tmp_path)!r})
        except KeyboardInterrupt:
            from rayflow.runtime import find_run
            _, summary = find_run("py-interrupt")
            print("interrupted", summary.state.type.value, sorted({{s.type.value for s in summary.task_states.values()}}))
            raise
        """
    )
    out, pids = _interrupt([sys.executable, "-c", script], tmp_path)
    assert out.returncode != 0
    assert "interrupted CANCELLED ['CANCELLED']" in out.stdout, out.stdout + out.stderr[-3000:]
    assert "KeyboardInterrupt" in out.stderr
    assert_all_gone(pids)
