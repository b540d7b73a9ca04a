"""The layer rules of docs/architecture.md and the public API, checked rather than hoped for."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import rayflow as rf

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    """ray only under runtime/, typer only under cli/, opentelemetry only under telemetry/, layers downward."""
    exe = shutil.which("lint-imports") or str(pathlib.Path(sys.executable).parent / "lint-imports")
    out = subprocess.run([exe, "--no-cache"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout
    assert "Contracts: 7 kept" in out.stdout


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
    submodules = {"cli", "core", "engine", "exceptions", "paths", "presentation", "results", "results_layout", "runs", "runtime", "serving", "states", "store", "telemetry", "ui"}
    assert sorted(rf.__all__) == rf.__all__
    assert set(exported) - submodules == set(rf.__all__)
    for name in rf.__all__:
        assert getattr(rf, name) is not None


def test_every_rayflow_error_shares_the_root():
    errors = [getattr(rf, n) for n in rf.__all__ if n.endswith("Error")]
    assert all(issubclass(e, rf.RayflowError) for e in errors)
    assert issubclass(rf.FlowRunError, rf.RayflowError) and issubclass(rf.UnknownTaskError, KeyError)
