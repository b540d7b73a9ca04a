"""The rayflow CLI as a user runs it: a subprocess, its output and exit code.

Runs on Ray join the session's cluster with --address, so each command does
not start a Ray of its own.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
from cli_runner import run_cli

from rayflow.store.task_table import COLUMNS

REPO = pathlib.Path(__file__).resolve().parent.parent
QUICKSTART = str(REPO / "examples" / "quickstart.py")
FLOWS = str(REPO / "tests" / "flows.py")


def rayflow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=timeout, RAY_ADDRESS="")


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
    top = rayflow("--help")
    assert top.returncode == 0 and "run" in top.stdout
    sub = rayflow("run", "--help")
    assert sub.returncode == 0
    for option in ("--param", "--params-json", "--address", "--run-id"):
        assert option in sub.stdout


def test_run_quickstart_on_the_session_cluster(ray_session):
    out = rayflow("run", f"{QUICKSTART}:etl", "--param", "days=2", "-p", "region=us", "--address", ray_session, "--run-id", "cli-run-1")
    assert out.returncode == 0, out.stderr[-3000:]
    states = rows(out.stdout)
    assert list(states) == ["extract", "revenue", "top_items", "validate", "report"]
    assert {s[0] for s in states.values()} == {"SUCCESS"}
    assert "run id: cli-run-1" in out.stdout
    result = json.loads(out.stdout.split("result: ", 1)[1])
    assert result["region"] == "us" and result["rows"] == 40


def test_params_json_and_module_target(ray_session):
    out = rayflow("run", "flows:diamond", "--params-json", '{"n": 6}', "--address", ray_session)
    assert out.returncode == 0, out.stderr[-3000:]
    sys.path.insert(0, str(REPO / "tests"))
    from flows import diamond_calc

    assert json.loads(out.stdout.split("result: ", 1)[1]) == diamond_calc(6)


def test_failed_run_exits_1_with_states(ray_session):
    out = rayflow("run", f"{FLOWS}:failing", "-p", "x=1", "--address", ray_session)
    assert out.returncode == 1, out.stdout + out.stderr[-3000:]
    states = rows(out.stdout)
    assert states["explode"][0] == "FAILED" and "Boom: bad input 2" in states["explode"][4]
    assert states["add-2"][0] == "TRIGGER_FAILED"
    assert "state: FAILED" in out.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", f"{QUICKSTART}:etl", "-p", "days=lots", "-p", "colour=red"], "days"),
        (["run", f"{QUICKSTART}:etl", "-p", "nonsense"], "name=value"),
        (["run", f"{QUICKSTART}:etl", "--params-json", "[1, 2]"], "JSON object"),
        (["run", f"{QUICKSTART}:missing"], "flows defined there: ['etl', 'regions']"),
        (["run", "no/such/file.py:etl"], "no such file"),
        (["run", "quickstart_without_colon"], "must look like"),
        (["run", f"{FLOWS}:add"], "not a flow"),
    ],
)
def test_bad_input_exits_2_with_a_message_not_a_traceback(args, needle):
    out = rayflow(*args, "--local")
    assert out.returncode == 2, out.stdout + out.stderr
    assert needle in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("error: ")


def test_bad_parameters_list_every_field():
    out = rayflow("run", f"{QUICKSTART}:etl", "-p", "days=lots", "-p", "colour=red", "--local")
    assert "days:" in out.stderr and "colour: unknown parameter" in out.stderr


def test_unreachable_address_exits_3_naming_it():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = rayflow("run", f"{QUICKSTART}:etl", "--address", f"127.0.0.1:{port}")
    assert out.returncode == 3, out.stdout + out.stderr
    assert f"127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


def test_local_runner_from_the_cli():
    out = rayflow("run", f"{QUICKSTART}:etl", "--local", "-p", "days=1")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.split("result: ", 1)[1])["rows"] == 20


def test_mapping_example_runs_from_the_cli(ray_session):
    out = rayflow("run", "examples/daily_scores.py:daily", "-p", "weight=2", "--address", ray_session)
    assert out.returncode == 0, out.stderr[-3000:]
    states = rows(out.stdout)
    assert states["score"][0] == "MAPPED" and "5000 items" in states["score"][4]
    assert float(out.stdout.split("result: ", 1)[1]) > 0


def test_a_target_whose_import_fails_is_one_line_with_the_file_and_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import rayflow as rf\n\ndef oops(:\n    pass\n")
    out = run_cli("run", f"{broken}:flow", "--local", home=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert f"{broken}:3: syntax error" in out.stderr and "Traceback" not in out.stderr
    failing = tmp_path / "failing.py"
    failing.write_text("import rayflow as rf\n\nx = 1\nraise RuntimeError('no database here')\n")
    out = run_cli("run", f"{failing}:flow", "--local", home=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "failed at line 4: RuntimeError: no database here" in out.stderr
    missing = tmp_path / "missing_dep.py"
    missing.write_text("import no_such_package_anywhere\n")
    out = run_cli("run", f"{missing}:flow", "--local", home=tmp_path)
    assert out.returncode == 2 and "ModuleNotFoundError: No module named 'no_such_package_anywhere'" in out.stderr
