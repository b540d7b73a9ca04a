"""A failed task's traceback names the user's file, line and source, from the user's first frame.

The tasks here are defined inside the test functions, so cloudpickle ships
them by value: the case where cloudpickle 3.1.3 renames their code's file to
``<dynamic-code>``.  Each raising line carries a ``# raises:`` marker that
``line_of`` finds, so the expected line numbers follow edits of this file.
"""

from __future__ import annotations

import importlib.util
import linecache
import os
import pathlib
import sys

import cloudpickle
import pytest

import rayflow as rf
from rayflow.engine.payload import dump_payload, load_payload
from rayflow.engine.protocol import format_user_traceback
from rayflow.states import StateType as T
from rayflow.store import RunStore

THIS_FILE = __file__
ENGINE_DIR = f"rayflow{os.sep}engine{os.sep}"


def on(flow, runner):
    return flow.with_options(runner=runner)


def line_of(marker: str) -> int:
    """The line of this file that ends with ``# raises: <marker>``."""
    lines = pathlib.Path(THIS_FILE).read_text().splitlines()
    (number,) = [n for n, line in enumerate(lines, 1) if line.rstrip().endswith(f"# raises: {marker}")]
    return number


def assert_points_at_user_code(tb: str, marker: str, source: str, function: str) -> None:
    assert tb.startswith("Traceback (most recent call last):\n"), tb
    first_frame = tb.splitlines()[1]
    assert first_frame == f'  File "{THIS_FILE}", line {line_of(marker)}, in {function}', tb
    assert source in tb, tb
    assert ENGINE_DIR not in tb and "<dynamic-code>" not in tb, tb


def test_a_task_defined_in_a_function_is_shipped_by_value_and_cloudpickle_may_rename_its_file():
    """The premise of this file: without rayflow's payload, the worker may not see the file name."""

    def local() -> None:
        pass

    shipped = cloudpickle.loads(cloudpickle.dumps(local))
    assert shipped is not local  # by value: a new function and code object
    assert shipped.__code__.co_filename in (THIS_FILE, "<dynamic-code>")  # 3.0-3.1.2 / 3.1.3+
    assert load_payload(dump_payload(local)).__code__.co_filename == THIS_FILE


def test_a_failed_task_traceback_names_this_file_line_and_source_without_engine_frames(runner):
    @rf.task
    def explode_here(x: int) -> int:
        raise ValueError(f"exploded with {x}")  # raises: task

    @rf.flow
    def exploding():
        return explode_here(3)

    run = on(exploding, runner).run()
    state = run.task_states["explode_here"]
    assert state.type is T.FAILED
    tb = state.error.traceback
    assert_points_at_user_code(tb, "task", 'raise ValueError(f"exploded with {x}")', "explode_here")
    assert tb.rstrip().endswith("ValueError: exploded with 3")


def test_a_failed_map_item_traceback_names_this_file_line_and_source_without_engine_frames(runner):
    @rf.task(chunk_size=2)
    def picky_item(x: int) -> int:
        if x == 2:
            raise KeyError(f"item {x}")  # raises: item
        return x

    @rf.flow
    def picking():
        return picky_item.map(range(4))

    run = on(picking, runner).run()
    states = run.map_states("picky_item")
    assert [s.type for s in states] == [T.SUCCESS, T.SUCCESS, T.FAILED, T.SUCCESS]
    tb = states[2].error.traceback
    assert_points_at_user_code(tb, "item", 'raise KeyError(f"item {x}")', "picky_item")
    assert tb.rstrip().endswith("KeyError: 'item 2'")


def test_a_chained_exception_shows_both_user_frames_and_no_engine_frames(runner):
    def parse(text: str) -> int:
        return int(text)  # raises: cause

    @rf.task
    def convert(text: str) -> int:
        try:
            return parse(text)
        except ValueError as exc:
            raise RuntimeError(f"cannot convert {text!r}") from exc  # raises: chained

    @rf.flow
    def converting():
        return convert("x")

    tb = on(converting, runner).run().task_states["convert"].error.traceback
    cause, _, effect = tb.partition("The above exception was the direct cause of the following exception:")
    assert effect, tb
    assert f'File "{THIS_FILE}", line {line_of("cause")}, in parse' in cause
    assert "return int(text)" in cause and "ValueError: invalid literal" in cause
    assert_points_at_user_code(effect.lstrip("\n"), "chained", "raise RuntimeError(f", "convert")
    assert ENGINE_DIR not in tb


def test_the_failure_log_record_names_this_file_and_line(tmp_path, monkeypatch, ray_session):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))

    @rf.task
    def fail_loudly() -> None:
        raise OSError("disk on fire")  # raises: logged

    @rf.flow
    def loud():
        return fail_loudly()

    run = on(loud, "ray").run()
    assert run.state.type is T.FAILED
    (record,) = [r for r in RunStore(tmp_path).logs(run.run_id) if r["level"] == "ERROR"]
    assert record["task_key"] == "fail_loudly"
    message = record["message"]
    assert f'File "{THIS_FILE}", line {line_of("logged")}, in fail_loudly' in message, message
    assert 'raise OSError("disk on fire")' in message and ENGINE_DIR not in message


# -- the payload module on its own ----------------------------------------------


SCRIPT = '''\
def helper(x):
    raise ValueError(f"helper got {x}")  # deep


def outer(x):
    def inner(y):
        return helper(y + 1)  # middle

    return inner(x)  # top
'''


def load_script(path: pathlib.Path, name: str):
    """A module from a file that workers could not import: cloudpickle ships its functions by value."""
    path.write_text(SCRIPT)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    return module


def test_a_payload_shows_the_source_lines_where_its_file_does_not_exist(tmp_path):
    path = tmp_path / "gone_script.py"
    module = load_script(path, "gone_script")
    try:
        payload = dump_payload((module.outer, 1))
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        del sys.modules["gone_script"]
    path.unlink()  # a worker on another node: no such file
    linecache.clearcache()
    try:
        fn, x = load_payload(payload)
        assert fn is not module.outer and fn.__code__.co_filename == str(path)
        with pytest.raises(ValueError) as info:
            fn(x)
        tb = format_user_traceback(info.value)
        for name, number, text in [
            ("outer", 9, "return inner(x)  # top"),
            ("inner", 7, "return helper(y + 1)  # middle"),  # a nested code object
            ("helper", 2, 'raise ValueError(f"helper got {x}")  # deep'),  # a global shipped by value
        ]:
            assert f'File "{path}", line {number}, in {name}\n    {text}\n' in tb, tb
    finally:
        linecache.cache.pop(str(path), None)


def test_a_payload_does_not_replace_the_file_a_worker_has(tmp_path):
    path = tmp_path / "kept_script.py"
    module = load_script(path, "kept_script")
    try:
        payload = dump_payload(module.outer)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        del sys.modules["kept_script"]
    linecache.clearcache()
    fn = load_payload(payload)
    assert fn.__code__.co_filename == str(path)
    assert str(path) not in linecache.cache  # linecache reads the file itself, when asked
    with pytest.raises(ValueError) as info:
        fn(0)
    assert "# deep" in format_user_traceback(info.value)


def test_an_error_of_rayflow_itself_keeps_its_frames():
    """Nothing of the user's in the stack: every frame stays, they are the whole story."""

    @rf.task(batch=True, chunk_size=3)  # the three items in one call
    def short_batch(xs):
        return xs[:1]

    @rf.flow(runner="local")
    def shortening():
        return short_batch.map(range(3))

    tb = shortening.run().map_states("short_batch")[0].error.traceback
    assert f"{ENGINE_DIR}worker{os.sep}item_runners.py" in tb and "ValueError: batch task returned 1 results for 3 items" in tb
