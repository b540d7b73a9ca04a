"""Start a slow test's own process when its module starts, so that it runs beside the module's
other tests instead of after them (suite time, issue 23).

A test that spends tens of seconds in a process of its own (its own Ray, a spilling or
out-of-memory driver) mostly waits: ``early_process`` starts that process from a module-scoped
autouse fixture, only when the test that reads it was selected (``-k``, ``-m`` and the tiers
never pay for a process nobody reads), and the test then reads what it printed, with the same
assertions as when it started the process itself.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest


def selected(request: pytest.FixtureRequest, *test_names: str) -> bool:
    """Whether a test of the requesting module named one of ``test_names`` (any parametrization)
    is to run in this session."""
    module = request.node.path
    return any(item.originalname in test_names and item.path == module for item in request.session.items)


def kill_group(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s process group (started with ``start_new_session=True``: its Ray with it) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=10)
    except (ValueError, subprocess.TimeoutExpired):  # its pipes were read already, or it will not die
        proc.wait(10)
