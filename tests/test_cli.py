"""The rayflow CLI as a user runs it: a subprocess, its output and exit code.

Runs on Ray join the session's cluster with --address, so each command does
not start a Ray of its own; the module's runs go at once (``cli_runs``), each test checks its
own.  The help and a refusal before any work run in this process.  Each bad input's one-line answer and exit code (an unreachable address, a
target that does not import, bad parameters) is checked once, in test_bad_inputs.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
import subprocess
import sys

import pytest
from cli_runner import run_cli, run_cli_in_process

from rayflow.store.task_table import COLUMNS

REPO = pathlib.Path(__file__).resolve().parent.parent
QUICKSTART = str(REPO / "examples" / "quickstart.py")
FLOWS = str(REPO / "tests" / "flows.py")


def rayflow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=timeout, RAY_ADDRESS="")


def cli_runs_argv(address: str) -> dict[str, tuple[str, ...]]:
    """The `rayflow run`s the tests below check, by name."""
    return {
        "quickstart": ("run", f"{QUICKSTART}:etl", "--param", "days=2", "-p", "region=us", "--address", address,
                       "--run-id", "cli-run-1"),
        "module target": ("run", "flows:diamond", "--params-json", '{"n": 6}', "--address", address),
        "failing": ("run", f"{FLOWS}:failing", "-p", "x=1", "--address", address),
        "local": ("run", f"{QUICKSTART}:etl", "--local", "-p", "days=1"),
        "mapping": ("run", "examples/daily_scores.py:daily", "-p", "weight=2", "--address", address),
    }


@pytest.fixture(scope="module")
def cli_runs(ray_session) -> dict[str, subprocess.CompletedProcess]:
    """Each `rayflow run` of this module, run at once (each is a process of its own, seconds of
    start-up and waiting on Ray: together they take half as long as one after another)."""
    runs = cli_runs_argv(ray_session)
    with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
        done = {name: pool.submit(rayflow, *argv) for name, argv in runs.items()}
        return {name: future.result() for name, future in done.items()}


def rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    header = lines.index("\t".join(COLUMNS))  # the one task table of run, show and the UI
    out = {}
    for line in lines[header + 1 :]:
        if line.startswith("run id:"):
            break
        key, *rest = line.split("\t")
        out[key] = rest
    return out


def test_help_texts():
    top = run_cli_in_process("--help")
    assert top.returncode == 0 and "run" in top.stdout
    sub = run_cli_in_process("run", "--help")
    assert sub.returncode == 0
    for option in ("--param", "--params-json", "--address", "--run-id"):
        assert option in sub.stdout


def test_run_quickstart_on_the_session_cluster(cli_runs):
    out = cli_runs["quickstart"]
    assert out.returncode == 0, out.stderr[-3000:]
    states = rows(out.stdout)
    assert list(states) == ["extract", "revenue", "top_items", "validate", "report"]
    assert {s[0] for s in states.values()} == {"SUCCESS"}
    assert "run id: cli-run-1" in out.stdout
    result = json.loads(out.stdout.split("result: ", 1)[1])
    assert result["region"] == "us" and result["rows"] == 40


def test_params_json_and_module_target(cli_runs):
    out = cli_runs["module target"]
    assert out.returncode == 0, out.stderr[-3000:]
    sys.path.insert(0, str(REPO / "tests"))
    from flows import diamond_calc

    assert json.loads(out.stdout.split("result: ", 1)[1]) == diamond_calc(6)


def test_failed_run_exits_1_with_states(cli_runs):
    out = cli_runs["failing"]
    assert out.returncode == 1, out.stdout + out.stderr[-3000:]
    states = rows(out.stdout)
    assert states["explode"][0] == "FAILED" and "Boom: bad input 2" in states["explode"][4]
    assert states["add-2"][0] == "TRIGGER_FAILED"
    assert "state: FAILED" in out.stdout


def test_bad_parameters_list_every_field():
    out = run_cli_in_process("run", f"{QUICKSTART}:etl", "-p", "days=lots", "-p", "colour=red", "--local", RAY_ADDRESS="")
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    assert "days:" in out.stderr and "colour: unknown parameter" in out.stderr


def test_local_runner_from_the_cli(cli_runs):
    out = cli_runs["local"]
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.split("result: ", 1)[1])["rows"] == 20


def test_mapping_example_runs_from_the_cli(cli_runs):
    out = cli_runs["mapping"]
    assert out.returncode == 0, out.stderr[-3000:]
    states = rows(out.stdout)
    assert states["score"][0] == "MAPPED" and "5000 items" in states["score"][4]
    assert float(out.stdout.split("result: ", 1)[1]) > 0
