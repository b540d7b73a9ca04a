"""Run the ``rayflow`` command line in a subprocess, as a user would, for the CLI tests."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def run_cli(*args: str, home: pathlib.Path | None = None, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """``python -m rayflow ARGS`` from the repository root; ``home`` becomes RAYFLOW_HOME."""
    extra = {**env, **({"RAYFLOW_HOME": str(home)} if home is not None else {})}
    return subprocess.run(
        [sys.executable, "-m", "rayflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **extra},
    )
