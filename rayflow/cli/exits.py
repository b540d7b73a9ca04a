"""The command line's exit codes, and which exception ends a command with which: one table
for every command (``rayflow run``, ``resume``, ``serve``, ``submit``, ``limit``, ...),
applied by ``handled`` (every command) and ``history_errors`` (those reading the history).

======  ===============================================================================
code    meaning
======  ===============================================================================
0       done: the run succeeded, the command did what it was asked
1       FAILED: the run failed, or the run asked for is not known (or crashed)
2       bad usage: target, parameters, options, run id, history, schedule, limit, ...
3       no cluster: Ray could not be reached (or refused the credentials)
130     interrupted (Ctrl-C): the run was cancelled
143     terminated (SIGTERM): the run was cancelled
======  ===============================================================================
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from rayflow.exceptions import (
    ApprovalError,
    ClusterConnectionError,
    DefinitionError,
    DuplicateRunError,
    GraphError,
    LimitError,
    ParameterError,
    ResultStoreError,
    ResumeError,
    RunCrashedError,
    RunIdError,
    ScheduleError,
    SerializationError,
    TargetError,
    UnknownRunError,
    UnsatisfiableResourcesError,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CLUSTER, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143

# Which exception ends a command with which code: the first row whose class matches.
CODES: tuple[tuple[tuple[type[BaseException], ...], int], ...] = (
    ((UnknownRunError, RunCrashedError), EXIT_FAILED),
    ((ClusterConnectionError,), EXIT_CLUSTER),
    (
        (
            TargetError, ParameterError, GraphError, DefinitionError, SerializationError, ResultStoreError,
            DuplicateRunError, UnsatisfiableResourcesError, ResumeError, ScheduleError, RunIdError, LimitError,
            ApprovalError,
        ),
        EXIT_USAGE,
    ),
)
EXPECTED: tuple[type[BaseException], ...] = tuple(cls for classes, _ in CODES for cls in classes)


def exit_code(exc: BaseException) -> int:
    """The exit code of a command that ``exc`` ended (one of ``EXPECTED``; anything else: 1)."""
    for classes, code in CODES:
        if isinstance(exc, classes):
            return code
    return EXIT_FAILED


def handled(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` ended by the table: an exception of ``EXPECTED`` is one line, ``error: ...``,
    and its code.  Every command is registered through this (``rayflow.cli``): none catches
    a tuple of its own."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EXPECTED as exc:
            from rayflow.cli.usage import fail

            raise fail(str(exc), exit_code(exc)) from None

    wrapper.by_the_table = True  # type: ignore[attr-defined]  # what tests/test_exits.py looks for
    return wrapper


def history_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command that reads the run history: a history that cannot be used (RAYFLOW_HOME a
    file, a damaged history.db, a locked one) is one line naming it, exit 2, never an sqlite
    traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import sqlite3

        try:
            return command(*args, **kwargs)
        except BrokenPipeError:  # `rayflow runs | head`: the reader had enough
            raise
        except (sqlite3.Error, OSError) as exc:  # a file, a path that cannot be made or written
            if isinstance(exc, ClusterConnectionError):  # a cluster's job server not reached (--address): its own code
                raise
            from rayflow.cli.usage import fail
            from rayflow.store import rayflow_home

            raise fail(f"cannot use the run history at {rayflow_home()}: {exc}", EXIT_USAGE) from None

    return wrapper
