"""Resume finds the flow where a user expects it: among this process's live flows (by name and
the code recorded with the run) when the flow was defined in ``__main__``, a notebook cell or a
function; and, on the command line, a recorded module target in the current directory first."""

from __future__ import annotations

import gc
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
from cli_runner import REPO, run_cli_in_process

import rayflow as rf
from rayflow.states import StateType as T
from rayflow.store import RunStore


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAYFLOW_RESULTS", raising=False)
    return tmp_path / "home"


def _flows(flag: pathlib.Path, runner: str, times: int = 2, name: str = "inner"):
    """A persisting flow defined in a function (no target to load it by), failing while ``flag`` exists."""
    log = flag.parent / "ran.log"

    @rf.task(persist=True)
    def load() -> int:
        with open(log, "a") as f:
            f.write("load\n")
        return 10

    @rf.task
    def fragile(x: int) -> int:
        if flag.exists():
            raise RuntimeError("fragile failed this time")
        return x * times

    @rf.flow(name=name, runner=runner)
    def inner():
        return fragile(load())

    return inner, log


def test_resume_finds_a_flow_defined_in_a_function_in_this_process(home, tmp_path, runner):
    flag = tmp_path / "fail"
    flag.write_text("")
    flow, log = _flows(flag, runner)
    failed = flow.run()
    assert failed.state.type is T.FAILED
    assert RunStore(home).run(failed.run_id)["graph"]["target"] is None  # nothing to import it by
    flag.unlink()
    resumed = rf.resume(failed.run_id)
    assert resumed.result() == 20
    assert resumed.task_states["load"].type is T.CACHED  # the same flow: its stored result loaded
    assert log.read_text() == "load\n"


NOTEBOOK_CELL = """
import rayflow as rf

@rf.task
def shout(word: str) -> str:
    if FAIL:
        raise ValueError("not yet")
    return word.upper()

@rf.flow(runner="local")
def cell(word: str = "hi"):
    return shout(word)
"""


def test_resume_finds_a_flow_defined_in_a_main_like_namespace(home):
    cell: dict = {"__name__": "__main__", "FAIL": True}  # a notebook cell's globals: not importable
    exec(compile(NOTEBOOK_CELL, "<cell>", "exec"), cell)
    failed = cell["cell"].run(word="yo")
    assert failed.state.type is T.FAILED
    cell["FAIL"] = False
    assert rf.resume(failed.run_id).result() == "YO"


def _twins(flag: pathlib.Path):
    @rf.task
    def step(x: int) -> int:
        if flag.exists():
            raise RuntimeError("not yet")
        return x

    @rf.flow(name="twin", runner="local")
    def plus():
        return step(1)

    @rf.flow(name="twin", runner="local")
    def times():
        return [step(2), step(3)]

    return plus, times


def test_two_live_flows_of_one_name_the_one_with_the_runs_code_is_resumed(home, tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("")
    first, second = _twins(flag)
    assert first.code_id != second.code_id
    failed_first, failed_second = first.run(), second.run()
    assert failed_first.state.type is T.FAILED and failed_second.state.type is T.FAILED
    flag.unlink()
    assert rf.resume(failed_second.run_id).result() == [2, 3]  # the second's body, not the first's
    assert rf.resume(failed_first.run_id).result() == 1  # nor the newest one's


def test_no_live_flow_of_the_runs_name_and_code_is_refused_naming_it(home, tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("")
    flow, _ = _flows(flag, "local", name="lonely")  # a name no other test's flow (alive or not yet collected) has
    failed = flow.run()
    del flow
    gc.collect()  # the flow is gone from this process
    with pytest.raises(rf.ResumeError, match=r"flow 'lonely' of run .*no flow named 'lonely'.*flow=lonely"):
        rf.resume(failed.run_id)

    @rf.flow(name="lonely", runner="local")
    def inner():  # the same name, other code
        return 1

    with pytest.raises(rf.ResumeError, match=r"flow\(s\) named 'lonely' in this process have other code"):
        rf.resume(failed.run_id)


FLOWS = '''
import pathlib
import rayflow as rf

@rf.task(persist=True)
def first() -> int:
    with open("first.count", "a") as f:
        f.write("ran\\n")
    return 20

@rf.task
def second(x: int) -> int:
    if pathlib.Path("fail").exists():
        raise RuntimeError("second failed this time")
    return x + 1

@rf.flow(runner="local")
def f():
    return second(first())
'''


def test_cli_resume_imports_a_recorded_module_target_from_the_current_directory(home, tmp_path):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    module = "cwd_flows_r"  # a name no test imports
    (work / f"{module}.py").write_text(FLOWS)
    (work / "fail").write_text("")
    env = {**os.environ, "RAYFLOW_HOME": str(home), "PYTHONPATH": str(REPO)}
    started = subprocess.run(
        [sys.executable, "-c", f"import {module}; {module}.f.with_options(run_id='cwd-1').run()"],
        cwd=work, env=env, capture_output=True, text=True, timeout=60,
    )
    assert started.returncode == 0, started.stderr
    assert RunStore(home).run("cwd-1")["graph"]["target"] == f"{module}:f"
    (work / "fail").unlink()

    refused = run_cli_in_process("resume", "cwd-1", "--local", home=home, cwd=elsewhere)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"cannot import module '{module}'" in refused.stderr and str(elsewhere) in refused.stderr
    assert module not in sys.modules and str(elsewhere) not in sys.path  # the directory is taken off again

    rayflow = pathlib.Path(sys.executable).parent / "rayflow"  # the console script: no cwd on its path
    resumed = subprocess.run([str(rayflow), "resume", "cwd-1", "--local"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert "21" in resumed.stdout
    assert (work / "first.count").read_text() == "ran\n"  # first's stored result loaded, not run again


def test_cli_loader_imports_a_module_target_from_the_current_directory(tmp_path, monkeypatch):
    from rayflow.cli.loader import load_flow

    module = "cwd_flows_r_run"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(FLOWS))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, module, raising=False)
    try:
        assert load_flow(f"{module}:f").name == "f"
        assert sys.path[0] == str(tmp_path)  # kept first: the module's own lazy imports find its neighbours
        del sys.path[0]
        assert load_flow("flows:diamond").name == "diamond"  # the tests' own flows.py: not from here
        assert str(tmp_path) not in sys.path  # taken off again
    finally:
        sys.modules.pop(module, None)
