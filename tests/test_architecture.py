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
    assert "Contracts: 4 kept" in out.stdout


def test_exported_members_are_curated_and_sorted():
    exported = [name for name in dir(rf) if not name.startswith("_")]
    submodules = {"cli", "core", "engine", "exceptions", "runtime", "states", "store", "telemetry"}
    assert sorted(rf.__all__) == rf.__all__
    assert set(exported) - submodules == set(rf.__all__)
    for name in rf.__all__:
        assert getattr(rf, name) is not None


def test_every_rayflow_error_shares_the_root():
    errors = [getattr(rf, n) for n in rf.__all__ if n.endswith("Error")]
    assert all(issubclass(e, rf.RayflowError) for e in errors)
    assert issubclass(rf.FlowRunError, rf.RayflowError) and issubclass(rf.UnknownTaskError, KeyError)
