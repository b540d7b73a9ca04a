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
from cli_runner import run_cli, run_cli_in_process

import rayflow as rf
from rayflow.states import StateType as T
from rayflow.store import RunStore


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
    assert resumed.run_id == failed.run_id  # the same run, a second attempt
    recorded = RunStore(home).run(failed.run_id)
    assert recorded["state"] == "SUCCESS" and recorded["attempt"] == 2
    assert [(a["attempt"], a["state"]) for a in recorded["attempts"]] == [(1, "FAILED"), (2, "SUCCESS")]
    shown = {t["task_key"]: t["state"] for t in recorded["transitions"]}  # the latest attempt's tasks
    assert shown["load"] == "CACHED" and shown["report"] == "SUCCESS"
    show = run_cli_in_process("show", failed.run_id, home=home)
    assert show.returncode == 0 and "attempts: 1 FAILED, 2 SUCCESS" in show.stdout

    # a run that succeeded has nothing to resume
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


def run_and_kill(home: pathlib.Path, tmp_path: pathlib.Path, script: str, run_id: str, ready, why: str) -> pathlib.Path:
    """Run ``script`` (a flow on the local runner) as a driver subprocess and SIGKILL it once
    ``ready()`` holds and the run history has its run; returns the work folder it was given."""
    root = tmp_path / "work"
    root.mkdir()
    path = tmp_path / f"{run_id.replace('-', '_')}.py"
    path.write_text(script)
    (root / "hang").write_text("")
    env = {**os.environ, "RAYFLOW_HOME": str(home)}
    driver = subprocess.Popen([sys.executable, str(path), str(root), run_id], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready(root):
            assert driver.poll() is None and time.monotonic() < deadline, why
            time.sleep(0.05)
        while time.monotonic() < deadline:  # the history has the run (its first rows are written within 0.5 s)
            db = home / "history.db"
            if db.exists() and sqlite3.connect(db).execute("SELECT count(*) FROM runs WHERE run_id=?", [run_id]).fetchone()[0]:
                break
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait(30)
    return root


def test_resume_after_the_driver_was_killed_reruns_only_unfinished_tasks(home, tmp_path):
    root = run_and_kill(
        home, tmp_path, KILLED_SCRIPT, "killed-run",
        lambda root: (root / "second.started").exists(), "the driver never reached the second task",
    )
    listed = run_cli_in_process("runs", home=home)
    assert listed.returncode == 0 and "killed-run" in listed.stdout and "CRASHED" in listed.stdout, listed.stdout
    shown = run_cli_in_process("show", "killed-run", home=home)
    assert "CRASHED" in shown.stdout, shown.stdout + shown.stderr
    (root / "hang").unlink()
    out = run_cli("resume", "killed-run", "--local", home=home)
    assert out.returncode == 0, out.stderr
    assert "21" in out.stdout
    assert counts(root) == {"first": 1, "second": 2}  # first's persisted result was loaded


def item_runs(log: pathlib.Path) -> list[int]:
    return sorted(int(line) for line in log.read_text().split()) if log.exists() else []


def test_a_resumed_map_loads_its_stored_chunks_and_runs_only_the_items_that_failed(home, tmp_path, runner):
    """
    scale.map(range(1000)) (items 150 and 750 fail the first time) -> shift.map (element-wise) -> add_up
    Both maps persist per chunk; the resumed run loads every stored chunk and runs again only
    the two failed items and the two items downstream of them.
    """
    root = tmp_path / "work"
    root.mkdir()
    (root / "fail").write_text("")
    flow = resumable.mapped.with_options(runner=runner)
    failed = flow.run(root=str(root))
    assert failed.state.type is T.FAILED
    assert item_runs(root / "items.log") == list(range(1000))
    assert item_runs(root / "shifted.log") == [3 * x for x in range(1000) if x not in (150, 750)]

    (root / "fail").unlink()
    (root / "items.log").unlink()
    (root / "shifted.log").unlink()
    resumed = rf.resume(failed.run_id, flow=flow)
    assert resumed.result() == sum(3 * x + 1 for x in range(1000))  # what an uninterrupted run gives
    assert item_runs(root / "items.log") == [150, 750]
    assert item_runs(root / "shifted.log") == [450, 2250]
    assert resumed.task_states["scale"].type is T.MAPPED


KILLED_MAP_SCRIPT = textwrap.dedent(
    """
    import pathlib, sys, time
    import rayflow as rf

    @rf.task(persist=True, chunk_size=100)
    def work(x: int, root: str) -> int:
        with open(pathlib.Path(root) / "items.log", "a") as f:
            f.write(f"{x}\\n")
        if x == 650 and (pathlib.Path(root) / "hang").exists():
            (pathlib.Path(root) / "hanging").write_text("")
            time.sleep(120)
        return x * x

    @rf.task
    def total(xs: list) -> int:
        return sum(xs)

    @rf.flow(runner="local")
    def killed_map(root: str):
        return total(work.map(range(1000), rf.unmapped(root)))

    if __name__ == "__main__":
        killed_map.with_options(run_id=sys.argv[2]).run(root=sys.argv[1])
    """
)


def test_resume_after_the_driver_was_killed_mid_map_reruns_only_unfinished_chunks(home, tmp_path):
    stored = home / "results" / "runs" / "killed-map" / "work"
    root = run_and_kill(
        home, tmp_path, KILLED_MAP_SCRIPT, "killed-map",
        lambda root: (root / "hanging").exists() and len(list(stored.glob("chunk-*"))) >= 3, "the map never got going",
    )
    kept = set()
    for path in stored.glob("chunk-*-base.*"):
        start, stop = (int(p) for p in path.name.split("-")[1:3])
        kept.update(range(start, stop))
    assert kept and 650 not in kept
    (root / "hang").unlink()
    (root / "items.log").unlink()
    out = run_cli("resume", "killed-map", "--local", home=home)
    assert out.returncode == 0, out.stderr
    assert str(sum(x * x for x in range(1000))) in out.stdout  # as an uninterrupted run
    rerun = set(item_runs(root / "items.log"))
    assert rerun and not (rerun & kept) and rerun | kept == set(range(1000))


def test_a_flatten_consumer_of_a_resumed_map_sees_the_loaded_chunks_items(home, tmp_path):
    """expand.map (each item -> [x, x]) -> flatten -> bump.map -> picky_total (fails the first time)."""
    root = tmp_path / "work"
    root.mkdir()
    (root / "fail").write_text("")
    flow = resumable.flattened.with_options(runner="local")
    failed, other = flow.run(root=str(root)), flow.run(root=str(root))
    assert failed.state.type is T.FAILED and other.state.type is T.FAILED
    (root / "fail").unlink()
    expected = sum(2 * (x + 1) for x in range(10))
    assert rf.resume(failed.run_id, flow=flow).result() == expected  # as an uninterrupted run
    grown = rf.resume(other.run_id, flow=flow, n=12)  # stored chunks for 0..9, new ones after
    assert grown.result() == sum(2 * (x + 1) for x in range(12))


def test_a_run_whose_driver_is_still_alive_is_not_resumed(home, tmp_path):

    from rayflow.store.history import HistoryRecorder

    store = RunStore(home)
    recorder = HistoryRecorder(
        store, "live-run", "chain", {"root": str(tmp_path)}, ["load"],
        {"flow": "chain", "nodes": [], "driver": {"host": __import__("socket").gethostname(), "pid": os.getpid()}},
    )
    from rayflow.states import State

    recorder.on_transition(run_id="live-run", task_key=None, old=State(type=T.PENDING), new=State(type=T.RUNNING))
    recorder.close()
    with pytest.raises(rf.ResumeError, match=f"still running .*process {os.getpid()}"):
        rf.resume("live-run", flow=resumable.chain.with_options(runner="local"))
    assert store.run("live-run")["state"] == "RUNNING"  # this process is alive: not CRASHED


def test_a_run_that_resumed_another_under_an_older_rayflow_keeps_finding_its_results(home, tmp_path):
    """Older rayflows gave a resumed run a new id (R2 resumed R1, loading R1's results, which
    stay under runs/R1/): R2's own attempts must still find them, attempt after attempt."""
    from rayflow.results import ResultStore

    root = tmp_path / "work"
    root.mkdir()
    (root / "fail").write_text("")
    flow = resumable.chain.with_options(runner="local")
    first = flow.run(root=str(root))
    store = ResultStore(str(home / "results"))
    loaded = {key: store.find(f"runs/{first.run_id}/{key}") for key in ("load", "side")}
    legacy = flow.with_options(resumed_from=first.run_id, resume_results=loaded).run(root=str(root))  # as R2 was
    assert legacy.run_id != first.run_id and legacy.state.type is T.FAILED
    assert rf.resume(legacy.run_id, flow=flow).state.type is T.FAILED  # still failing: attempt 2
    (root / "fail").unlink()
    done = rf.resume(legacy.run_id, flow=flow)  # attempt 3
    assert done.result()["report"] == "total=6"
    assert counts(root)["load"] == 1 and counts(root)["side"] == 1  # never run again: R1's results found
