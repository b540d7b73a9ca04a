""""Type: message" is written by one helper, rayflow.states.error_text (issue 23): an exception
without a message reads "Type", never "Type: " with nothing after it.  Before, the engine's
triggers, state handlers, pickling errors, item cache and chunk writes, a flow body's failure,
imports of a flow, the result store, the cache keys, serve's fires, the UI's actions, joining a
cluster, Ray's (de)serialisation errors, the limits' and the recorder's history problems each
wrote ``f"{type(exc).__name__}: {exc}"`` by hand."""

from __future__ import annotations

import pathlib
import re

import rayflow as rf
from rayflow.states import StateType as T

import pytest

from rayflow.exceptions import GraphError

PACKAGE = pathlib.Path(rf.__file__).parent


@rf.task
def one() -> int:
    return 1


def _refuses(states) -> bool:
    raise RuntimeError()


def _hands_back(task, old, new):
    if new.is_successful():
        raise KeyError


def test_a_trigger_or_handler_raising_without_a_message_is_named_by_its_type_alone():
    @rf.flow(runner="local")
    def guarded():
        first = one()
        return one.with_options(name="gated", trigger=_refuses)(wait_for=[first]), one.with_options(
            name="handled", on_state=_hands_back
        )()

    run = guarded.run()
    assert run.task_states["gated"].type is T.FAILED
    assert run.task_states["gated"].message == "trigger _refuses raised RuntimeError"
    assert run.task_states["handled"].type is T.FAILED
    assert run.task_states["handled"].message == "state handler _hands_back raised KeyError"


def test_a_flow_body_raising_without_a_message_is_named_by_its_type_alone():
    @rf.flow(runner="local")
    def broken():
        raise LookupError()

    with pytest.raises(GraphError) as caught:
        broken.run()
    assert str(caught.value).endswith("building flow 'broken' failed: LookupError")


def test_no_module_writes_type_colon_message_by_hand():
    paths = sorted(PACKAGE.rglob("*.py"))
    copies = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for path in paths
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\{type\((\w+)\)\.__name__\}: \{(str\()?\1", line)
    ]
    assert copies == []
