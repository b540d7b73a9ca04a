"""What a ``rayflow`` command does before its first useful output (benchmarks/cli_startup.py
times it): the commands that read only the run history import no Ray, pydantic, asyncio or
rich (a pipe gets plain lines); option values are read as typer reads them, with or without
pydantic; a command's help and errors are the same whether typer built only that command or
every one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from rayflow.cli import app, coercion
from rayflow.cli.usage import only_command
from cli_runner import REPO, run_cli

HEAVY = ("ray", "pydantic", "asyncio", "rich", "pyarrow", "opentelemetry", "rayflow.engine.protocol")

SAMPLES = {
    str: ["x", "", "a b", "-1", "é", "--not-an-option"],
    int: ["0", "1", "65535", "65536", "4200", "7", "-3", "007", "123456789012345678", "1234567890123456789012", "x", "1.5", " 5", "+5", "1_000", "", 20],
    float: ["1", "1.5", "-0.25", "007.50", "1e3", "nan", "inf", "x", "", " 2", 1.0, 30.0],
}


def _params():
    root = typer.main.get_command(app)
    stack = [root]
    while stack:
        command = stack.pop()
        stack.extend(getattr(command, "commands", {}).values())
        yield from (p for p in command.params if hasattr(p, "type_descriptor"))


def test_plain_option_values_are_what_typers_own_coercion_makes_of_them():
    """Every option of every command, every sample value: the fast answer, where it gives one,
    equals typer's own (pydantic's) coercion of the value; and it answers the plain ones."""
    from typer._coercion import build_runtime_param

    assert coercion.install()
    compared = fast = 0
    for param in _params():
        descriptor = param.type_descriptor
        info = descriptor.parameter_info
        assert coercion._plain(info), param.name  # else typer's own coercion, always: a test to write
        samples = SAMPLES.get(descriptor.annotation, [])
        if getattr(descriptor.annotation, "__origin__", None) is list:
            samples = [("a", "b=1"), ()]
        for value in samples:
            done, answer = coercion.fast_value(descriptor.annotation, value, info.min, info.max)
            if not done:
                continue
            fast += 1
            typers = build_runtime_param(descriptor)._coerce_value(value, param=param, ctx=None)
            assert (answer, type(answer)) == (typers, type(typers)), (param.name, value)
            compared += 1
        if descriptor.annotation is not bool:
            assert type(param.get_runtime_param()).__name__ == "FastRuntimeParam", param.name
    assert compared > 50 and fast == compared


@pytest.mark.parametrize("argv", [["runs", "--limit", "x"], ["show", "r1", "--interval", "soon"], ["ui", "--port", "0"],
                                  ["ui", "--port", "65536"], ["serve", "--ui-port", "-1"]])
def test_a_bad_option_value_is_refused_as_typer_refuses_it(argv):
    """A value the fast path does not read goes to typer's own coercion: its message, exit 2."""
    runner = CliRunner()
    lean, full = (runner.invoke(a, argv) for a in (only_command(app, argv), app))
    assert lean.exit_code == full.exit_code == 2
    assert lean.output == full.output and "Invalid value" in lean.output


def test_each_commands_help_is_the_same_when_typer_builds_only_that_command():
    runner = CliRunner()
    names = sorted(typer.main.get_command(app).commands)
    assert {"runs", "show", "logs", "graph", "run", "cancel", "approve", "ui", "serve", "submit", "cache"} <= set(names)
    for name in names:
        lean = only_command(app, [name, "--help"])
        assert lean is not app and len(lean.registered_commands) + len(lean.registered_groups) == 1, name
        shown = runner.invoke(lean, [name, "--help"], env={"COLUMNS": "120"})
        assert shown.exit_code == 0 and shown.output == runner.invoke(app, [name, "--help"], env={"COLUMNS": "120"}).output
    for argv in ([], ["--help"], ["--version"], ["rnus"]):  # no command named: the whole app
        assert only_command(app, argv) is app


def test_the_history_commands_import_nothing_heavy(tmp_path):
    """`runs`, `show` and `logs` of a finished run, in a pipe: none of HEAVY is imported."""
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['rayflow', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('rayflow', run_name='__main__')\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules], code, file=sys.stderr)\n"
    )
    run = run_cli("run", "tests/flows.py:adds", "--local", "--run-id", "startup-1", home=tmp_path)
    assert run.returncode == 0, run.stderr
    for argv in (["runs"], ["show", "startup-1"], ["logs", "startup-1"], ["runs", "--json"]):
        out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "RAYFLOW_HOME": str(tmp_path)}, cwd=REPO)
        line = [x for x in out.stderr.splitlines() if x.startswith("HEAVY")][-1]
        assert line == "HEAVY [] 0", (argv, out.stderr[-2000:])
        if argv == ["runs", "--json"]:
            assert [r["run_id"] for r in json.loads(out.stdout)] == ["startup-1"]


def _imported(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh Python holds after running ``code``."""
    probe = f"import sys\n{code}\nprint([m for m in {modules!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_the_job_servers_client_needs_neither_ray_nor_its_job_client():
    """`rayflow submit` (no working dir), `logs`, `cancel` with an http:// address: the REST client
    on the standard library (runtime.driver.job_client), not Ray's JobSubmissionClient."""
    heavy = ("ray", "requests", "aiohttp", "pydantic")
    assert _imported("from rayflow.runtime.driver import jobs, job_client", heavy) == []


def test_a_driver_makes_its_run_actor_without_importing_the_engine():
    """The run actor's module imports the engine in the actor's process (its __init__), so a
    submitted run's driver creates the actor before it loads the engine (runtime.driver.warm)."""
    engine = ("numpy", "pyarrow", "rayflow.engine.plan", "rayflow.runs.assembly", "rayflow.runtime.actor.executor")
    assert _imported("import rayflow.runtime.driver.actors, rayflow.runtime.driver.warm", engine) == []
