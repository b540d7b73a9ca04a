"""Run the ``rayflow`` command line for the CLI tests: in a subprocess, as a user would
(``run_cli``), or in this process for the commands that need no process of their own
(``run_cli_in_process``: about 2 s less per command, the interpreter's start and imports)."""

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


def run_cli_in_process(*args: str, home: pathlib.Path | None = None, timeout: float = 120,
                       cwd: pathlib.Path = REPO, **env: str) -> subprocess.CompletedProcess:
    """``rayflow ARGS`` run in this process (``rayflow.cli.main``, stdout and stderr captured), for
    the commands that need no process of their own: read-only ones (``show``, ``runs``, ``logs``,
    ``schedule preview``, ``--help``) and bad inputs refused before any work.  Never for a command
    that starts or joins Ray, serves, or runs a flow.  Same arguments and result as ``run_cli``
    (``timeout`` is accepted and unused); the environment, ``sys.argv`` and the working directory
    (``cwd`` while it runs) are restored after."""
    import contextlib
    import io

    from rayflow.cli import main

    extra = {**env, **({"RAYFLOW_HOME": str(home)} if home is not None else {})}
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, os.getcwd()
    out, err = _ThisThread(io.StringIO(), sys.stdout), _ThisThread(io.StringIO(), sys.stderr)
    try:
        os.chdir(cwd)
        os.environ.update(extra)
        sys.argv = ["rayflow", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["rayflow", *args], code, out.getvalue(), err.getvalue())


class _ThisThread:
    """A stream that keeps what the thread that made it writes and passes other threads' writes
    on to ``others`` (the session's Ray prints its workers' log lines from a thread of its own)."""

    def __init__(self, mine, others) -> None:
        import threading

        self._mine, self._others, self._owner = mine, others, threading.get_ident()

    def _target(self):
        import threading

        return self._mine if threading.get_ident() == self._owner else self._others

    def write(self, text: str) -> int:
        return self._target().write(text)

    def writelines(self, lines) -> None:
        self._target().writelines(lines)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return False

    def getvalue(self) -> str:
        return self._mine.getvalue()

    def __getattr__(self, name: str):
        return getattr(self._mine, name)
