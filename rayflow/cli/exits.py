"""The command line's exit codes, and which exception ends a command with which: one table
for every command (``rayflow run``, ``resume``, ``serve``, ``submit``, ``limit``, ...).

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

from rayflow.core.loader import TargetError
from rayflow.exceptions import (
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
