"""The test tiers: each test is marked, at collection, by what it uses.

- ``unit``: no Ray, no subprocess (both refused while it runs: see ``refuse_processes_and_ray``);
- ``ray``: the session's Ray (``ray_session``, the ``runner`` fixture's "ray"), in-process;
- ``cli``: spawns processes (``rayflow`` through ``run_cli``, any other ``subprocess``, a browser);
- ``cluster``: Ray clusters of its own (``token_cluster``, ``RayCluster``), killed processes and
  workers, out-of-memory kills, signals.

``quick`` is added to the unit and ray tests: ``pytest -m quick`` is the development tier.
Tests run in tier order (unit, ray, cli, cluster), each tier in the order collected; on pytest-xdist's
workers (the full suite: ``-n 2 --dist loadfile``) in ``XDIST_ORDER``, files whole.
The tier comes from the test's fixtures and from the names its code (its body, the fixtures and
the helper functions of tests/ it calls) refers to; a tier marker written on a test or its module
wins.  A test marked ``unit`` that spawns a process or starts Ray fails, naming the tier it
belongs to, so a mark that is wrong is found the first time the test runs.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import types
from collections.abc import Iterator

import pytest

TIERS = ("unit", "ray", "cli", "cluster")  # each above the one before: a test takes the highest it uses
# The order under pytest-xdist (each worker a process and a session Ray of its own; a file goes to
# one worker whole, handed out in this order): unit first still, then the longest files first, so
# the two workers end together rather than one waiting on a cluster file handed out last.
XDIST_ORDER = ("unit", "cluster", "cli", "ray")

# Modules whose every test injects a fault into processes (kills, OOM, signals) or builds a cluster.
CLUSTER_MODULES = {"test_submit", "test_cluster_auth", "test_fault_load", "test_ray_worker_deaths", "test_faults"}
CLUSTER_NAMES = {"token_cluster", "RayCluster", "SIGKILL", "SIGTERM", "SIGINT", "killpg"}
CLI_NAMES = {"run_cli", "subprocess", "Popen", "check_output", "check_call", "webdriver"}  # a browser too
RAY_NAMES = {"ray", "ray_session"}
IN_PROCESS = {"run_cli_in_process"}  # helpers not to look into: they name subprocess for its result type only


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names) | set(code.co_varnames) | set(code.co_freevars)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _defined_in(fn, home: pathlib.Path) -> bool:
    code = getattr(fn, "__code__", None)
    return code is not None and pathlib.Path(code.co_filename).resolve().parent == home


def _names_used(fn, home: pathlib.Path, seen: set, depth: int = 3) -> set[str]:
    """The names ``fn`` refers to, with those of the helper functions it calls that are defined in
    ``home`` (the test's folder), ``depth`` calls deep."""
    fn = getattr(fn, "__wrapped__", fn)
    if fn in seen or not _defined_in(fn, home):
        return set()
    seen.add(fn)
    names = _code_names(fn.__code__)
    if depth > 0:
        for name in sorted(names):
            helper = fn.__globals__.get(name)
            if isinstance(helper, types.FunctionType) and name not in CLI_NAMES | IN_PROCESS:
                names |= _names_used(helper, home, seen, depth - 1)
    return names


def tier_of(item: pytest.Item) -> str:
    """The tier ``item`` belongs to (see the module's docstring)."""
    written = [m.name for m in item.iter_markers() if m.name in TIERS]
    if written:
        return written[0]
    if item.module.__name__.rpartition(".")[2] in CLUSTER_MODULES:
        return "cluster"
    names = set(item.fixturenames)
    home = pathlib.Path(item.module.__file__).resolve().parent
    seen: set = set()
    names |= _names_used(getattr(item, "function", None), home, seen)
    for name, defs in getattr(item, "_fixtureinfo").name2fixturedefs.items():
        if name not in ("runner", "ray_session", "token_cluster", "unit_tests_stay_in_process"):
            for fixturedef in defs:
                names |= _names_used(fixturedef.func, home, seen)
    callspec = getattr(item, "callspec", None)
    runner = callspec.params.get("runner") if callspec is not None else None
    if names & CLUSTER_NAMES:
        return "cluster"
    if names & CLI_NAMES:
        return "cli"
    if runner == "ray" or "ray_session" in names or (runner is None and names & RAY_NAMES):
        return "ray"
    return "unit"


def pytest_collection_modifyitems(config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier, and the unit and ray tests ``quick``; then order them by tier
    (unit first, each tier in the order collected; under xdist ``XDIST_ORDER``), so that every
    unit test runs before the session's Ray starts: one that tries to start it is refused, one
    that finds it absent sees the truth."""
    tiers = {}
    for item in items:
        tier = tiers[item] = tier_of(item)
        if not item.get_closest_marker(tier):
            item.add_marker(tier)
        if tier in ("unit", "ray"):
            item.add_marker("quick")
    if os.environ.get("PYTEST_XDIST_WORKER"):  # `-n 2 --dist loadfile`: the heaviest tier's files handed out first
        items.sort(key=lambda item: XDIST_ORDER.index(tiers[item]))
    else:
        items.sort(key=lambda item: TIERS.index(tiers[item]))


class TierViolation(RuntimeError):
    """A test marked ``unit`` tried to spawn a process or start Ray."""


@contextlib.contextmanager
def refuse_processes_and_ray(nodeid: str) -> Iterator[None]:
    """While it is open: spawning a process (subprocess, multiprocessing, os.fork) and starting or
    joining Ray raise TierViolation, naming the test and the tier it belongs in."""
    import _posixsubprocess
    import subprocess

    def refuse(what: str, tier: str):
        def refused(*args, **kwargs):
            raise TierViolation(f"{nodeid} is marked 'unit' but {what}: mark it "
                                f"@pytest.mark.{tier} (a unit test runs no process and no Ray)")
        return refused

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_posixsubprocess, "fork_exec", refuse("spawns a subprocess", "cli"))  # multiprocessing
        mp.setattr(subprocess, "_fork_exec", refuse("spawns a subprocess", "cli"), raising=False)
        mp.setattr(subprocess.Popen, "_execute_child", refuse("spawns a subprocess", "cli"))
        mp.setattr(os, "fork", refuse("forks a process", "cli"))
        mp.setattr(os, "posix_spawn", refuse("spawns a process", "cli"))
        mp.setattr(os, "posix_spawnp", refuse("spawns a process", "cli"))
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is a dependency
            ray = None
        if ray is not None:  # unit tests run first (see above): Ray is not up, so using it means init
            mp.setattr(ray, "init", refuse("starts or joins Ray", "ray"))
        yield


@pytest.fixture(autouse=True)
def unit_tests_stay_in_process(request):
    """A test marked ``unit`` that spawns a process or starts Ray fails, saying so."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    with refuse_processes_and_ray(request.node.nodeid):
        yield
