"""``rayflow show`` against ``rayflow run``: the same durations, the same item counts, and a
bounded wait for a run that ended in its actor but is missing from this RAYFLOW_HOME's history.

The commands run as a user runs them (a subprocess joining the session's Ray with --address).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

import rayflow as rf
from rayflow.cli.output import print_run

pytestmark = pytest.mark.usefixtures("ray_session")
REPO = pathlib.Path(__file__).resolve().parent.parent
THIS = "tests/test_cli_show.py"


def rayflow(home: pathlib.Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rayflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "RAYFLOW_HOME": str(home), "RAY_ADDRESS": ""},
    )


def table(stdout: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The tab-separated task table of ``run``/``show`` output: header and rows by task key."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("task\t"))
    header = lines[start].split("\t")
    rows = {}
    for line in lines[start + 1 :]:
        if "\t" not in line:
            break
        cells = line.split("\t")
        rows[cells[0]] = dict(zip(header, cells))
    return header, rows


def _once(marker_dir: str, name: str) -> bool:
    """True the first time ``name`` is asked for in ``marker_dir`` (across processes)."""
    try:
        fd = os.open(os.path.join(marker_dir, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


# -- 1. a run that ended in its actor, missing from this history -------------


@rf.task
def quick(x: int) -> int:
    return x + 1


@rf.flow
def small(x: int = 1) -> int:
    return quick(x)


def test_show_of_a_finished_live_run_missing_from_the_history_ends(tmp_path, monkeypatch, ray_session):
    """Started with one RAYFLOW_HOME, shown with another: the actor has it, this history never will."""
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "writer"))
    run = small.with_options(run_id="show-missing-1").run(x=2)
    assert run.state.is_successful()
    elsewhere = tmp_path / "reader"
    started = time.monotonic()
    try:
        out = rayflow(elsewhere, "show", "show-missing-1", "--address", ray_session, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("rayflow show did not end for a finished run missing from the history")
    took = time.monotonic() - started
    assert out.returncode == 1, out.stderr
    assert "state: SUCCESS (live)" in out.stdout  # what is known: the actor's final status
    _, rows = table(out.stdout)
    assert rows["quick"]["state"] == "SUCCESS"
    assert re.fullmatch(r"\d+\.\d{3}s", rows["quick"]["duration"])
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]  # Ray may log too
    assert len(errors) == 1, out.stderr
    assert "missing from the run history" in errors[0]
    assert str(elsewhere / "history.db") in errors[0] and "SUCCESS" in errors[0]
    assert took < 45

    as_json = rayflow(elsewhere, "show", "show-missing-1", "--address", ray_session, "--json", timeout=60)
    assert as_json.returncode == 1
    data = json.loads(as_json.stdout)
    assert data["live"] is True and data["state"] == "SUCCESS"
    assert data["in_history"] is False and data["history_db"] == str(elsewhere / "history.db")
    assert "missing from the run history" in as_json.stderr


@pytest.mark.timeout(60)
def test_show_waits_for_the_history_then_reports_it_missing(tmp_path, monkeypatch, capsys):
    """Unit level: a live status that says SUCCESS and a history that never has the run."""
    import rayflow.runtime
    from rayflow import cli

    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    monkeypatch.setattr(cli, "HISTORY_GRACE", 0.3)
    status = {
        "run_id": "r1", "flow": "f", "state": "FAILED", "maps": {},
        "tasks": {"t": {"state": "FAILED", "attempt": 1, "started_at": 10.0, "finished_at": 10.25, "message": "boom"}},
    }
    calls = []
    monkeypatch.setattr(rayflow.runtime, "live_status", lambda run_id, address=None: calls.append(run_id) or status)
    import typer

    with pytest.raises(typer.Exit) as exit_info:
        cli.show("r1", watch=False, as_json=False, interval=0.1, address=None)
    assert exit_info.value.exit_code == 1
    captured = capsys.readouterr()
    assert "t\tFAILED\t1\t0.250s" in captured.out and "state: FAILED (live)" in captured.out
    assert f"missing from the run history at {tmp_path / 'history.db'}" in captured.err
    assert 1 < len(calls) < 20  # it waited a little for the history, then stopped
