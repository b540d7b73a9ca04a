"""Resume: a failed or killed run runs again, loading the results it persisted.

Executions are counted with a side effect per task (``resumable.py`` appends a
line to ``<task>.count`` each time a task's code runs).
"""

from __future__ import annotations

import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
import resumable
from cli_runner import run_cli

import rayflow as rf
from rayflow.states import StateType as T


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAYFLOW_RESULTS", raising=False)
    return tmp_path / "home"


def counts(root: pathlib.Path) -> dict[str, int]:
    return {p.stem: p.read_text().count("ran\n") for p in root.glob("*.count")}


def test_resume_after_a_failure_reruns_only_what_failed_and_what_follows(home, tmp_path, runner):
    root = tmp_path / "work"
    root.mkdir()
    (root / "fail").write_text("")
    flow = resumable.chain.with_options(runner=runner)
    failed = flow.run(root=str(root))
    assert failed.state.type is T.FAILED
    assert counts(root) == {"load": 1, "fragile": 1, "side": 1}

    (root / "fail").unlink()
    resumed = rf.resume(failed.run_id, flow=flow)
    assert resumed.result() == {"report": "total=6", "side": "side", "extras": []}
    assert counts(root) == {"load": 1, "fragile": 2, "side": 1, "report": 1}  # load and side were loaded
    states = resumed.task_states
    assert states["load"].type is T.CACHED and states["load"].message.startswith(f"resumed from runs/{failed.run_id}/load")
    assert states["side"].type is T.CACHED
    assert states["fragile"].type is T.SUCCESS and states["report"].type is T.SUCCESS
    assert resumed.run_id != failed.run_id

    # a run that succeeded has nothing to resume; a resumed run's own resume finds the first run's results
    with pytest.raises(rf.ResumeError, match="ended SUCCESS"):
        rf.resume(resumed.run_id, flow=flow)


def test_resume_finds_the_flow_and_parameters_from_the_history(home, tmp_path, runner):
    root = tmp_path / "work"
    root.mkdir()
    (root / "fail").write_text("")
    failed = resumable.chain.with_options(runner=runner).run(root=str(root), extra=1)
    (root / "fail").unlink()
    if runner == "local":  # the command line, in this process
        out = run_cli("resume", failed.run_id, "--local", home=home)
        assert out.returncode == 0, out.stderr
        assert "total=6" in out.stdout
    else:  # the run's plan travelled to the actor and back into the history: its target too
        assert rf.resume(failed.run_id).result()["report"] == "total=6"
    assert counts(root) == {"load": 1, "fragile": 2, "side": 2, "report": 1}  # side-0 and side loaded


def test_resume_refuses_when_the_graph_lost_a_task_and_for_unknown_runs(home, tmp_path):
    root = tmp_path / "work"
    root.mkdir()
    (root / "fail").write_text("")
    failed = resumable.chain.with_options(runner="local").run(root=str(root), extra=2)
    with pytest.raises(rf.ResumeError, match="task 'side-1'.*no longer has") as info:
        rf.resume(failed.run_id, flow=resumable.chain.with_options(runner="local"), extra=1)
    assert info.value.task_key == "side-1"
    refused = run_cli("resume", failed.run_id, "--local", "-p", "extra=1", home=home)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "side-1" in refused.stderr
    unknown = run_cli("resume", "no-such-run", home=home)
    assert unknown.returncode == 1 and "no-such-run" in unknown.stderr and "Traceback" not in unknown.stderr
    with pytest.raises(rf.UnknownRunError):
        rf.resume("no-such-run")


KILLED_SCRIPT = textwrap.dedent(
    """
    import pathlib, sys, time
    import rayflow as rf

    @rf.task(persist=True)
    def first(root: str) -> int:
        with open(pathlib.Path(root) / "first.count", "a") as f:
            f.write("ran\\n")
        return 20

    @rf.task(persist=True)
    def second(x: int, root: str) -> int:
        with open(pathlib.Path(root) / "second.count", "a") as f:
            f.write("ran\\n")
        (pathlib.Path(root) / "second.started").write_text("")
        if (pathlib.Path(root) / "hang").exists():
            time.sleep(120)
        return x + 1

    @rf.flow(runner="local")
    def killed(root: str):
        return second(first(root), root)

    if __name__ == "__main__":
        killed.with_options(run_id=sys.argv[2]).run(root=sys.argv[1])
    """
)


def test_resume_after_the_driver_was_killed_reruns_only_unfinished_tasks(home, tmp_path):
    root = tmp_path / "work"
    root.mkdir()
    script = tmp_path / "killed_flow.py"
    script.write_text(KILLED_SCRIPT)
    (root / "hang").write_text("")
    env = {**os.environ, "RAYFLOW_HOME": str(home)}
    driver = subprocess.Popen([sys.executable, str(script), str(root), "killed-run"], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (root / "second.started").exists():
            assert driver.poll() is None and time.monotonic() < deadline, "the driver never reached the second task"
            time.sleep(0.05)
        while time.monotonic() < deadline:  # the history has the run (its first rows are written within 0.5 s)
            db = home / "history.db"
            if db.exists() and sqlite3.connect(db).execute("SELECT count(*) FROM runs WHERE run_id='killed-run'").fetchone()[0]:
                break
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait(30)
    listed = run_cli("runs", home=home)
    assert listed.returncode == 0 and "killed-run" in listed.stdout and "CRASHED" in listed.stdout, listed.stdout
    shown = run_cli("show", "killed-run", home=home)
    assert "CRASHED" in shown.stdout, shown.stdout + shown.stderr
    (root / "hang").unlink()
    out = run_cli("resume", "killed-run", "--local", home=home)
    assert out.returncode == 0, out.stderr
    assert "21" in out.stdout
    assert counts(root) == {"first": 1, "second": 2}  # first's persisted result was loaded
