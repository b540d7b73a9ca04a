"""Retries, signals, triggers, skips, case/merge, handlers and reference tasks, on every runner.

Tasks count their attempts in files (``Counter``), because on Ray each
attempt may run in another process.  State handlers run in the orchestrator
(the actor's process on Ray), so they too record to files.
"""

from __future__ import annotations

import json
import pathlib

import pytest
from flows import add

import rayflow as rf
from rayflow.states import StateType as T


def on(flow, runner):
    return flow.with_options(runner=runner)


class Counter:
    """A counter in a file, shared by every process that runs an attempt."""

    def __init__(self, path: pathlib.Path):
        self.path = str(path)

    def bump(self) -> int:
        p = pathlib.Path(self.path)
        n = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(n))
        return n


@rf.task
def flaky(counter: Counter, fail_times: int, error: str = "ValueError") -> str:
    n = counter.bump()
    if n <= fail_times:
        raise {"ValueError": ValueError, "OSError": OSError}[error](f"attempt {n} fails")
    return f"ok on {n}"


def types(states):
    return [s.type for s in states]


# -- retries -----------------------------------------------------------------------


def test_failing_twice_then_succeeding_with_two_retries(runner, tmp_path):
    @rf.flow
    def retried():
        return flaky.with_options(retries=2)(Counter(tmp_path / "c"), 2)

    run = on(retried, runner).run()
    state = run.task_states["flaky"]
    assert state.type is T.SUCCESS and state.attempt == 3
    assert run.result() == "ok on 3"
    history = run.history("flaky")
    assert types(history) == [T.PENDING, T.RUNNING, T.RETRYING, T.RUNNING, T.RETRYING, T.RUNNING, T.SUCCESS]
    assert [s.attempt for s in history if s.type is T.RUNNING] == [1, 2, 3]
    retrying = [s for s in history if s.type is T.RETRYING]
    assert "retry 1 of 2" in retrying[0].message and "attempt 1 fails" in retrying[0].message
    assert retrying[0].error.type == "builtins.ValueError" and retrying[0].error.system is False


def test_failing_twice_with_one_retry_fails_on_attempt_2(runner, tmp_path):
    @rf.flow
    def retried():
        return flaky.with_options(retries=1)(Counter(tmp_path / "c"), 2)

    run = on(retried, runner).run()
    state = run.task_states["flaky"]
    assert state.type is T.FAILED and state.attempt == 2
    assert state.error.message == "attempt 2 fails"
    assert run.state.type is T.FAILED


def test_retry_on_limits_which_errors_are_retried(runner, tmp_path):
    only_io = flaky.with_options(retries=3, retry_on=(IOError,))

    @rf.flow
    def filtered():
        return [
            only_io.with_options(name="value_error")(Counter(tmp_path / "a"), 1, "ValueError"),
            only_io.with_options(name="os_error")(Counter(tmp_path / "b"), 1, "OSError"),
        ]

    run = on(filtered, runner).run()
    value_error = run.task_states["value_error"]
    assert value_error.type is T.FAILED and value_error.attempt == 1
    assert "not one of retry_on" in value_error.message
    os_error = run.task_states["os_error"]
    assert os_error.type is T.SUCCESS and os_error.attempt == 2


def test_retry_delays_are_waited_out_in_the_orchestrator(runner, tmp_path):
    @rf.flow
    def delayed():
        return flaky.with_options(retries=2, retry_delay=[0.3, 0.6])(Counter(tmp_path / "c"), 2)

    run = on(delayed, runner).run()
    history = run.history("flaky")
    retrying = [s for s in history if s.type is T.RETRYING]
    running = [s for s in history if s.type is T.RUNNING]
    for gap, retry, next_run in zip((0.3, 0.6), retrying, running[1:]):
        assert retry.scheduled_for - retry.finished_at >= gap - 0.01
        assert next_run.timestamp >= retry.scheduled_for


def test_timeout_ends_timed_out_and_is_retried(runner):
    @rf.task(timeout=0.3, retries=1)
    def hang() -> None:
        import time

        time.sleep(3)

    @rf.flow
    def hung():
        return hang()

    run = on(hung, runner).run()
    state = run.task_states["hang"]
    assert state.type is T.TIMED_OUT and state.attempt == 2
    assert "timed out after 0.3s" in state.message
    assert T.RETRYING in types(run.history("hang"))
    assert run.state.type is T.FAILED


# -- signals -----------------------------------------------------------------------


@rf.task
def signal_in_try(kind: str) -> int:
    try:
        raise {"skip": rf.Skip("nothing to do"), "fail": rf.Fail("bad data")}[kind]
    except Exception:  # a user's broad handler must not swallow signals
        return -1


def test_skip_signal_skips_and_propagates(runner):
    @rf.flow
    def skipping():
        return add(signal_in_try("skip"), 1)

    run = on(skipping, runner).run()
    assert run.task_states["signal_in_try"].type is T.SKIPPED
    assert "nothing to do" in run.task_states["signal_in_try"].message
    assert run.task_states["add"].type is T.SKIPPED
    assert run.state.type is T.SUCCESS
    assert run.result() is None


def test_fail_signal_fails_and_is_retried(runner):
    @rf.flow
    def failing():
        return signal_in_try.with_options(retries=1)("fail")

    run = on(failing, runner).run()
    state = run.task_states["signal_in_try"]
    assert state.type is T.FAILED and state.attempt == 2
    assert "bad data" in state.message


def test_retry_signal_retries_past_retries(runner, tmp_path):
    @rf.task
    def insist(counter: Counter) -> int:
        n = counter.bump()
        if n < 3:
            raise rf.Retry(f"not yet ({n})", delay=0.05)
        return n

    @rf.flow
    def insisting():
        return insist(Counter(tmp_path / "c"))

    run = on(insisting, runner).run()
    assert run.result() == 3
    assert run.task_states["insist"].attempt == 3
    retrying = [s for s in run.history("insist") if s.type is T.RETRYING]
    assert len(retrying) == 2 and "not yet (1)" in retrying[0].message


# -- triggers --------------------------------------------------------------------


@rf.task
def report(*values) -> list:
    return list(values)


@pytest.mark.parametrize(
    "trigger, runs",
    [
        (rf.triggers.all_successful, False),
        (rf.triggers.all_failed, False),
        (rf.triggers.any_successful, True),
        (rf.triggers.any_failed, True),
        (rf.triggers.all_finished, True),
        (rf.triggers.always_run, True),
        (rf.triggers.not_all_skipped, True),
        (rf.triggers.some_successful(at_least=0.5), True),
        (rf.triggers.some_failed(at_least=2), False),
    ],
)
def test_triggers_after_one_success_and_one_failure(runner, trigger, runs):
    """
    add    signal_in_try("fail")
      \\      /
      report(trigger)
    """

    @rf.flow
    def mixed():
        return report.with_options(trigger=trigger)(add(1, 2), signal_in_try("fail"))

    run = on(mixed, runner).run()
    state = run.task_states["report"]
    if runs:
        assert state.type is T.SUCCESS
    else:
        assert state.type is T.TRIGGER_FAILED
        assert "signal_in_try" in state.message


def test_task_downstream_of_failure_gets_none_with_all_finished(runner):
    @rf.flow
    def cleanup():
        return report.with_options(trigger=rf.triggers.all_finished)(add(1, 2), signal_in_try("fail"))

    assert on(cleanup, runner).run().task_result("report") == [3, None]


def test_custom_trigger_and_a_trigger_that_raises(runner):
    def two_upstreams(states):
        return len(states) == 2

    def broken(states):
        raise RuntimeError("trigger bug")

    @rf.flow
    def custom():
        a, b = add(1, 1), add(2, 2)
        return [report.with_options(trigger=two_upstreams)(a, b), report.with_options(trigger=broken)(a)]

    run = on(custom, runner).run()
    assert run.task_states["report"].type is T.SUCCESS
    broken_state = run.task_states["report-2"]
    assert broken_state.type is T.FAILED and "trigger broken raised RuntimeError: trigger bug" in broken_state.message


# -- skips, case and merge ---------------------------------------------------------


def test_skip_on_upstream_skip_false_runs_with_none(runner):
    @rf.flow
    def tolerant():
        skipped = signal_in_try("skip")
        return [add(skipped, 1), report.with_options(skip_on_upstream_skip=False)(skipped, 5)]

    run = on(tolerant, runner).run()
    assert run.task_states["add"].type is T.SKIPPED
    assert run.task_states["report"].type is T.SUCCESS
    assert run.task_result("report") == [None, 5]


@rf.task
def classify(x: int) -> str:
    return "big" if x > 10 else "small"


@rf.task
def label(text: str) -> str:
    return text.upper()


@rf.flow
def branching(x: int = 5):
    r"""
          classify
         /        \
    case(big)    case(small)
        |             |
      label        label-2
         \        /
           merge
             |
           label-3
    """
    kind = classify(x)
    with rf.case(kind, "big"):
        big = label("big branch")
    with rf.case(kind, "small"):
        small = label("small branch")
    return label(rf.merge(big, small))


@pytest.mark.parametrize("x, taken, skipped", [(50, "label", "label-2"), (1, "label-2", "label")])
def test_case_and_merge_take_the_matching_branch(runner, x, taken, skipped):
    run = on(branching, runner).run(x=x)
    assert run.state.type is T.SUCCESS
    assert run.task_states[taken].type is T.SUCCESS
    assert run.task_states[skipped].type is T.SKIPPED
    assert "case not met" in run.task_states[skipped].message
    assert run.result() == ("BIG BRANCH" if x > 10 else "SMALL BRANCH")
    assert run.task_states["merge"].type is T.SUCCESS


def test_merge_of_all_skipped_branches_is_skipped(runner):
    @rf.flow
    def nothing(flag: bool = False):
        with rf.case(flag, True):
            a = add(1, 1)
        return add(rf.merge(a), 1)

    run = on(nothing, runner).run()
    assert run.task_states["merge"].type is T.SKIPPED
    assert run.task_states["add-2"].type is T.SKIPPED
    assert run.result() is None


def test_nested_cases(runner):
    r"""
    case                    a == 1   (a check on a plain value is keyed "case")
      └─ case-2             b == 2
           └─ add           runs only if both hold
    """

    @rf.flow
    def nested(a: int, b: int):
        with rf.case(a, 1):
            outer = add(a, 100)
            with rf.case(b, 2):
                inner = add(a, b)
        return {"outer": outer, "inner": inner}

    both = on(nested, runner).run(a=1, b=2)
    assert both.result() == {"outer": 101, "inner": 3}
    outer_only = on(nested, runner).run(a=1, b=3)
    assert outer_only.result() == {"outer": 101, "inner": None}
    assert outer_only.task_states["add-2"].type is T.SKIPPED
    neither = on(nested, runner).run(a=0, b=2)
    assert neither.result() == {"outer": None, "inner": None}
    assert neither.task_states["case-2"].type is T.SKIPPED


def test_case_skips_even_tasks_that_tolerate_skips(runner):
    @rf.flow
    def guarded(flag: bool = False):
        with rf.case(flag, True):
            return report.with_options(skip_on_upstream_skip=False)(1)

    assert on(guarded, runner).run().task_states["report"].type is T.SKIPPED


# -- state handlers ---------------------------------------------------------------


def recorder(path: pathlib.Path, name: str):
    def handler(subject, old, new):
        with open(path, "a") as fh:
            fh.write(json.dumps([name, getattr(subject, "name", None), old.type.value, new.type.value]) + "\n")

    handler.__name__ = handler.__qualname__ = name
    return handler


def read_log(path: pathlib.Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_handlers_are_called_on_every_transition_in_order(runner, tmp_path):
    log = tmp_path / "log.jsonl"
    watched = add.with_options(
        name="watched",
        on_state=[recorder(log, "first"), recorder(log, "second")],
        on_success=[recorder(log, "on_success")],
        on_failure=[recorder(log, "on_failure")],
    )

    @rf.flow(on_state=[recorder(log, "flow")])
    def observed():
        return watched(1, 2)

    run = on(observed, runner).run()
    assert run.result() == 3
    assert read_log(log) == [
        ["flow", "observed", "PENDING", "RUNNING"],
        ["first", "watched", "PENDING", "RUNNING"],
        ["second", "watched", "PENDING", "RUNNING"],
        ["first", "watched", "RUNNING", "SUCCESS"],
        ["second", "watched", "RUNNING", "SUCCESS"],
        ["on_success", "watched", "RUNNING", "SUCCESS"],
        ["flow", "observed", "RUNNING", "SUCCESS"],
    ]


def to_skipped(task, old, new):
    if new.is_failed():
        return rf.State(type=rf.StateType.SKIPPED, message=f"{task.name} failure ignored")
    return None


def exploding_handler(task, old, new):
    if new.type is rf.StateType.SUCCESS:
        raise RuntimeError("handler bug")


def test_a_handler_can_replace_the_state(runner):
    @rf.flow
    def forgiving():
        return add(signal_in_try.with_options(on_failure=[to_skipped])("fail"), 1)

    run = on(forgiving, runner).run()
    assert run.task_states["signal_in_try"].type is T.SKIPPED
    assert run.task_states["signal_in_try"].message == "signal_in_try failure ignored"
    assert run.task_states["add"].type is T.SKIPPED
    assert run.state.type is T.SUCCESS


def test_a_handler_that_raises_fails_the_task_naming_it(runner):
    @rf.flow
    def broken():
        return add.with_options(on_state=[exploding_handler])(1, 2)

    run = on(broken, runner).run()
    state = run.task_states["add"]
    assert state.type is T.FAILED
    assert "state handler exploding_handler raised RuntimeError: handler bug" in state.message
    assert run.state.type is T.FAILED


def test_flow_handler_can_replace_the_flow_state(runner):
    def keep_calm(flow, old, new):
        if new.is_failed():
            return rf.State(type=rf.StateType.SUCCESS, message=f"{flow.name}: failure accepted")

    @rf.flow(on_state=[keep_calm])
    def tolerated():
        return signal_in_try("fail")

    run = on(tolerated, runner).run()
    assert run.state.type is T.SUCCESS and run.state.message == "tolerated: failure accepted"


# -- the flow's final state -------------------------------------------------------------


def test_always_run_terminal_task_makes_the_flow_succeed(runner):
    """
    signal_in_try(fail) --> report(always_run)      report is the only terminal task
    """

    @rf.flow
    def cleanup():
        return report.with_options(trigger=rf.triggers.always_run)(signal_in_try("fail"))

    run = on(cleanup, runner).run()
    assert run.task_states["signal_in_try"].type is T.FAILED
    assert run.task_states["report"].type is T.SUCCESS
    assert run.state.type is T.SUCCESS


def test_reference_tasks_decide_the_flow_state(runner):
    @rf.flow
    def referenced():
        important = signal_in_try("fail")
        cleanup = report.with_options(trigger=rf.triggers.always_run)(important)
        rf.set_reference_tasks(important)
        return cleanup

    run = on(referenced, runner).run()
    assert run.task_states["report"].type is T.SUCCESS
    assert run.state.type is T.FAILED
    assert "signal_in_try" in run.state.message


def test_branching_helpers_need_a_flow():
    with pytest.raises(rf.GraphError, match="inside a flow"):
        rf.merge()
    with pytest.raises(rf.GraphError, match="inside a flow"):
        rf.set_reference_tasks()
    with pytest.raises(rf.GraphError, match="inside a flow"):
        with rf.case(1, 1):
            pass


class Halt(rf.signals.Signal):
    """A signal of the user's own that is none of Skip, Fail, Retry."""


def test_signals_follow_one_rule_for_tasks_and_map_items(runner, tmp_path):
    """Fail is retried, any other failing signal is not: alike for a plain task and a map item."""
    log = str(tmp_path / "calls")

    @rf.task(retries=1)
    def signalled(kind: str) -> str:
        with open(log, "a") as fh:
            fh.write(kind + "\n")
        raise (rf.Fail if kind.startswith("fail") else Halt)(kind)

    @rf.flow
    def both():
        return [
            signalled.with_options(name="fail_task")("fail-task"),
            signalled.with_options(name="halt_task")("halt-task"),
            signalled.with_options(name="items").map(["fail-item", "halt-item"]),
        ]

    run = on(both, runner).run()
    items = run.map_states("items")
    assert [run.task_states["fail_task"].attempt, run.task_states["halt_task"].attempt] == [2, 1]
    assert [s.attempt for s in items] == [2, 1]
    assert run.task_states["halt_task"].type is T.FAILED and items[1].type is T.FAILED
    calls = pathlib.Path(log).read_text().split()
    assert {k: calls.count(k) for k in set(calls)} == {"fail-task": 2, "halt-task": 1, "fail-item": 2, "halt-item": 1}


def test_an_on_failure_handler_that_raises_keeps_the_failure_it_handled(runner):
    def broken_handler(task, old, new):
        raise RuntimeError("the handler broke")

    @rf.task(on_failure=[broken_handler])
    def fails() -> int:
        raise ValueError("the original failure")

    @rf.flow
    def handled():
        return fails()

    run = handled.with_options(runner=runner).run()
    state = run.task_states["fails"]
    assert state.type is T.FAILED
    assert "the handler broke" in state.message and "the original failure" in state.message
    assert isinstance(state.exception, RuntimeError)
    assert isinstance(state.exception.__cause__, ValueError) and "the original failure" in str(state.exception.__cause__)
    assert "the original failure" in state.error.traceback  # and so in the history


def test_a_trigger_must_return_a_bool(runner):
    def sloppy(upstream):
        return "yes"

    @rf.task(trigger=sloppy)
    def guarded() -> int:
        return 1

    @rf.flow
    def triggered():
        return guarded()

    state = triggered.with_options(runner=runner).run().task_states["guarded"]
    assert state.type is T.FAILED and "returned str 'yes', not a bool" in state.message
