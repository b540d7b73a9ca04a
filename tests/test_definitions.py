"""Bad definitions and bad input: each is a clear error, raised before any work starts.

No Ray here: everything below fails before a runner is reached, which the
``no_runner`` fixture proves by making any runner call an error.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from flows import add, diamond, extract

import rayflow as rf
from rayflow.core.flow import register_runner


class _ExplodingRunner:
    calls = 0

    def run_flow(self, flow, graph):
        _ExplodingRunner.calls += 1
        raise AssertionError("a runner was reached although the input was bad")


register_runner("never", _ExplodingRunner)


@pytest.fixture
def no_runner():
    _ExplodingRunner.calls = 0
    yield "never"
    assert _ExplodingRunner.calls == 0


# -- task options --------------------------------------------------------------


def test_task_options_are_validated_and_named_at_decoration():
    with pytest.raises(rf.TaskOptionError) as info:

        @rf.task(retries=-1, num_cpu=2)
        def f(x):
            return x

    message = str(info.value)
    assert "retries" in message and "num_cpu" in message
    assert set(info.value.options) == {"retries", "num_cpu"}


@pytest.mark.parametrize(
    "options, name",
    [
        ({"timeout": 0}, "timeout"),
        ({"num_gpus": -1}, "num_gpus"),
        ({"memory": "lots"}, "memory"),
        ({"resources": {"CPU": 1}}, "resources"),
        ({"name": " spaced "}, "name"),
        ({"tags": 5}, "tags"),
    ],
)
def test_each_bad_option_is_named(options, name):
    with pytest.raises(rf.TaskOptionError, match=name):
        rf.task(**options)(lambda x: x)


def test_options_accept_timedelta_and_with_options_copies():
    t = rf.task(retries=2, retry_delay=timedelta(seconds=1.5), num_cpus=0.5, tags={"io"})(lambda x: x)
    assert t.options.retry_delay == 1.5
    t2 = t.with_options(name="other", retries=0)
    assert (t2.name, t2.options.retries, t2.options.num_cpus) == ("other", 0, 0.5)
    assert (t.name, t.options.retries) == ("<lambda>", 2)
    with pytest.raises(rf.TaskOptionError, match="retries"):
        t.with_options(retries="many")
    assert t.options.ray_options() == {"num_cpus": 0.5}


def test_async_generators_and_reserved_names_are_rejected():
    async def stream(x):
        yield x

    with pytest.raises(rf.DefinitionError, match="async generator"):
        rf.task(stream)

    def takes_wait_for(wait_for):
        return wait_for

    with pytest.raises(rf.DefinitionError, match="wait_for"):
        rf.task(takes_wait_for)


# -- binding -------------------------------------------------------------------


def test_unknown_argument_is_a_graph_error_naming_task_and_argument(no_runner):
    @rf.flow(runner=no_runner)
    def bad():
        return add(1, 2, z=3)

    with pytest.raises(rf.GraphError, match=r"task 'add'.*unexpected argument 'z'"):
        bad.run()


def test_missing_argument_is_a_graph_error(no_runner):
    @rf.flow(runner=no_runner)
    def bad():
        first = add(1, 2)
        return add(first)

    with pytest.raises(rf.GraphError, match=r"task 'add-2'.*missing required argument 'y'") as info:
        bad.run()
    assert info.value.task_key == "add-2"


def test_too_many_positional_arguments(no_runner):
    @rf.flow(runner=no_runner)
    def bad():
        return extract(1, 2)

    with pytest.raises(rf.GraphError, match="takes 1 positional argument"):
        bad.run()


@pytest.mark.parametrize(
    "body, what",
    [
        (lambda n: extract(n) if extract(n) else None, "truth test"),
        (lambda n: [extract(i) for i in range(extract(n))], "integer"),
        (lambda n: extract(n)[0], "indexing"),
        (lambda n: add(extract(n) + 1, 1), "arithmetic"),
        (lambda n: [x for x in extract(n)], "iteration"),
        (lambda n: len(extract(n)), "len"),
        (lambda n: add(1, 2) if add(1, n) > 1 else None, "comparison"),
        (lambda n: add(1, 2) if add(1, n) == 4 else None, "comparison"),
        (lambda n: 3 in extract(n), "membership"),
        (lambda n: extract(n).count(1), "attribute access"),
        (lambda n: add(extract(n).key, 1), r"attribute access \(\.key\)"),
        (lambda n: add(f"path/{extract(n)}", 1), "f-string"),
        (lambda n: add(str(extract(n)), 1), "f-string"),
        (lambda n: add(1, 2) if extract(n) == extract(n) else None, "comparison"),
        (lambda n: extract(n) in {"a": 1}, "dict key"),
        (lambda n: add(round(extract(n)), 1), "arithmetic"),
    ],
)
def test_task_results_used_as_values_are_explained(body, what, no_runner):
    """Parameters are real values; task results are references, and the error names rf.case."""

    def fn(n: int = 3):
        return body(n)

    with pytest.raises(rf.GraphError, match=what) as info:
        rf.flow(runner=no_runner)(fn).run()
    assert "rf.case(" in str(info.value) and "rf.merge" in str(info.value)


def test_refs_cannot_cross_flows(no_runner):
    leaked = {}

    @rf.flow
    def first():
        leaked["ref"] = extract(1)

    first.graph  # noqa: B018

    @rf.flow(runner=no_runner)
    def second():
        return add(leaked["ref"], 1)

    with pytest.raises(rf.GraphError, match="another flow"):
        second.run()


def test_bad_wait_for(no_runner):
    @rf.flow(runner=no_runner)
    def bad():
        return add(1, 2, wait_for=[5])

    with pytest.raises(rf.GraphError, match="wait_for"):
        bad.run()


def test_errors_in_the_flow_body_are_graph_errors(no_runner):
    @rf.flow(runner=no_runner)
    def broken():
        raise RuntimeError("oops")

    with pytest.raises(rf.GraphError, match="building flow 'broken' failed: RuntimeError: oops"):
        broken.run()


# -- parameters ------------------------------------------------------------------


@rf.flow(runner="never")
def typed(n: int, ratio: float = 0.5, names: list[str] = ["a"], flag: bool = False):  # noqa: B006
    return add(n, 1)


def test_parameters_are_coerced():
    assert typed.validate({"n": "5", "ratio": "1.5", "flag": "true"}) == {
        "n": 5,
        "ratio": 1.5,
        "names": ["a"],
        "flag": True,
    }


def test_parameter_error_lists_every_bad_field(no_runner):
    with pytest.raises(rf.ParameterError) as info:
        typed.run(ratio="wide", names=[1, 2], bogus=1)
    errors = info.value.errors
    assert errors["n"] == "missing required parameter"
    assert errors["bogus"] == "unknown parameter"
    assert "ratio" in errors and "'wide'" in errors["ratio"]
    assert any(k.startswith("names") for k in errors)
    assert all(name in str(info.value) for name in ("n", "bogus", "ratio", "names"))


def test_flow_signature_must_be_named_parameters():
    with pytest.raises(rf.DefinitionError, match=r"\*args"):

        @rf.flow
        def star(*xs):
            return None


def test_runtime_options_do_not_collide_with_parameters():
    @rf.flow(runner="local")
    def collide(address: str = "here", run_id: int = 0, runner: str = "r"):
        return extract(run_id)

    configured = collide.with_options(run_id="fixed-id")
    run = configured.run(address="x", run_id=2, runner="y")
    assert run.run_id == "fixed-id"
    assert run.result() == [0, 1]


def test_unknown_runner_and_bad_flow_options():
    with pytest.raises(rf.DefinitionError, match="unknown runner"):
        diamond.with_options(runner="nope").run()
    with pytest.raises(rf.TaskOptionError, match="bogus"):
        diamond.with_options(bogus=1)


# -- serialisation ---------------------------------------------------------------


def test_unpicklable_argument_fails_at_compile_naming_the_task():
    lock = threading.Lock()

    @rf.flow(runner="local")
    def locked():
        return add(lock, 1)

    with pytest.raises(rf.SerializationError, match=r"task 'add': an argument cannot be pickled") as info:
        locked.run()
    assert info.value.task_key == "add"


def test_unpicklable_function_fails_at_compile_naming_the_task():
    lock = threading.Lock()

    @rf.task
    def uses_lock(x):
        with lock:
            return x

    @rf.flow(runner="local")
    def locked():
        return uses_lock(1)

    with pytest.raises(rf.SerializationError, match=r"task 'uses_lock': its function"):
        locked.run()


# -- states ------------------------------------------------------------------------


@pytest.mark.parametrize("state_type", list(rf.StateType))
def test_state_predicates_partition_the_types(state_type):
    state = rf.State(type=state_type)
    successful = state_type.value in {"SUCCESS", "CACHED", "MAPPED", "SKIPPED"}
    failed = state_type.value in {"FAILED", "TIMED_OUT", "TRIGGER_FAILED", "CANCELLED", "CRASHED"}
    assert state.is_successful() is successful
    assert state.is_failed() is failed
    assert state.is_finished() is (successful or failed)
    assert state.is_skipped() is (state_type is rf.StateType.SKIPPED)
    assert state.attempt == 1


def test_states_are_immutable():
    state = rf.State(type=rf.StateType.SKIPPED, message="nothing to do")
    with pytest.raises(Exception):
        state.message = "changed"  # type: ignore[misc]
