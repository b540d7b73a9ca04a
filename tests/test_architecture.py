"""The layer rules of docs/architecture.md and the public API, checked rather than hoped for."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tomllib

import pytest

import rayflow as rf

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    """ray only under runtime/, typer only under cli/, opentelemetry only under telemetry/, layers downward."""
    exe = shutil.which("lint-imports") or str(pathlib.Path(sys.executable).parent / "lint-imports")
    out = subprocess.run([exe, "--no-cache"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert f"Contracts: {len(contracts)} kept" in out.stdout


def _lint_with(tmp_path: pathlib.Path, module: str, line: str) -> subprocess.CompletedProcess:
    """lint-imports on a copy of the package where ``module`` (a path under rayflow/) gets ``line``."""
    shutil.copytree(REPO / "rayflow", tmp_path / "rayflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    planted = tmp_path / "rayflow" / module
    planted.write_text(planted.read_text() + f"\n{line}  # noqa: E402\n")
    exe = shutil.which("lint-imports") or str(pathlib.Path(sys.executable).parent / "lint-imports")
    return subprocess.run([exe, "--no-cache"], capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})


@pytest.mark.parametrize(
    "module, line, contract",
    [
        # runtime/ by process: the run actor's code imports nothing of the driver's
        ("runtime/actor/executor.py", "from rayflow.runtime.driver import runner", "runtime/ is split by process"),
        # the worker's side (the limit holders) imports nothing of the run actor's
        ("runtime/worker/limit_holders.py", "from rayflow.runtime.actor import executor", "the worker's and the limits service's code"),
        # the store is in the forbidden-package contracts: no ray, no typer, no opentelemetry
        ("store/views.py", "import ray", "ray is imported only under rayflow.runtime"),
        ("store/views.py", "import typer", "typer is imported only under rayflow.cli"),
        ("store/views.py", "import opentelemetry", "opentelemetry is imported only under rayflow.telemetry"),
        # the limits' state is pure, below runtime/
        ("engine/limits_state.py", "import ray", "The limits' state is pure"),
        # engine.admission (the tag gate) is on the orchestrator's side
        ("engine/admission.py", "from rayflow.engine.worker import chunk", "The orchestrator side imports no worker"),
        # the plan (compiled in the driver) is shared: it imports no role's code
        ("engine/plan.py", "from rayflow.engine.driver import flow_run", "What every process of a run shares"),
    ],
)
def test_a_planted_import_breaks_its_contract(tmp_path, module, line, contract):
    out = _lint_with(tmp_path, module, line)
    assert out.returncode != 0, out.stdout
    broken = " ".join(out.stdout.split()).split("Broken contracts", 1)[-1]
    assert contract in broken, out.stdout


def test_each_runtime_folder_says_which_process_runs_it():
    for folder, process in {"driver": "driver process", "actor": "FlowRunActor", "limits": "limits", "worker": "Ray worker"}.items():
        package = __import__(f"rayflow.runtime.{folder}", fromlist=["_"])
        assert process in " ".join(package.__doc__.split()), folder


def test_the_process_role_contracts_catch_an_orchestrator_importing_worker_code(tmp_path):
    """A copy of the package where the orchestrator's policy imports a worker module breaks a contract."""
    shutil.copytree(REPO / "rayflow", tmp_path / "rayflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    policy = tmp_path / "rayflow" / "engine" / "policy.py"
    policy.write_text(policy.read_text() + "\nfrom rayflow.engine.worker import chunk  # noqa: E402\n")
    exe = shutil.which("lint-imports") or str(pathlib.Path(sys.executable).parent / "lint-imports")
    out = subprocess.run([exe, "--no-cache"], capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert out.returncode != 0
    assert "The orchestrator side imports no worker or driver code" in out.stdout and "1 broken" in out.stdout


def test_exported_members_are_curated_and_sorted():
    exported = [name for name in dir(rf) if not name.startswith("_")]
    submodules = {"cli", "core", "engine", "exceptions", "paths", "presentation", "results", "results_layout", "runners", "runs", "runtime", "serving", "state_types", "states", "store", "telemetry", "ui"}
    assert sorted(rf.__all__) == rf.__all__
    assert set(exported) - submodules == set(rf.__all__)
    for name in rf.__all__:
        assert getattr(rf, name) is not None


def test_every_rayflow_error_shares_the_root():
    errors = [getattr(rf, n) for n in rf.__all__ if n.endswith("Error")]
    assert all(issubclass(e, rf.RayflowError) for e in errors)
    assert issubclass(rf.FlowRunError, rf.RayflowError) and issubclass(rf.UnknownTaskError, KeyError)


def test_core_names_no_layer_above_it_and_finds_runners_through_entry_points():
    """No table of module names in core/ (it once held "rayflow.runtime.runner:RayRunner" and
    imported rayflow.serving by name): the runners and flow.serve are entry points of the
    installed package, composed in rayflow.runners."""
    from rayflow.core.flow import resolve_runner
    from rayflow.runs.local import LocalRunner

    import ast
    import re

    above = re.compile(r"rayflow\.(runtime|runs|serving|cli|ui)\b|^[\w.]+:\w+$")  # a module above, or "module:attribute"
    for path in (REPO / "rayflow" / "core").glob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree) if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node) is not None}
        strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]
        assert not [text for text in strings if above.search(text)], path
    assert isinstance(resolve_runner("local"), LocalRunner)
    with pytest.raises(rf.DefinitionError, match=r"unknown runner 'nope'; known: \[.*'local'.*'ray'"):
        resolve_runner("nope")
