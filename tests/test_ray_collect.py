"""How the RayExecutor collects finished works: it asks Ray about a bounded window of the oldest
pending reports per step (and about all of them only every SWEEP_SECONDS), so a flow's cost per
task does not grow with its number of tasks; a report ready beyond the window is still seen.
Reports travel as plain-pickle bytes where they pickle so (Ray's serialiser costs more), and so does
a work that reports no start (its payload, work and run id); a wide flow's steps wait briefly for
several reports."""

from __future__ import annotations

import os
import time

import pytest
import ray

import rayflow as rf
from rayflow.engine.orchestrator import Orchestrator
from rayflow.engine.plan import compile_plan
from rayflow.runtime.actor import executor as ray_executor
from rayflow.engine.protocol import AttemptResult
from rayflow.runtime.actor.executor import RayExecutor, _packed, _unpacked
from rayflow.states import ErrorInfo
from rayflow.states import StateType as T
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("ray_session")


@rf.task
def echo(i: int) -> int:
    return i


@rf.task
def held(path: str) -> str:
    """Runs until the test creates ``path``."""
    while not os.path.exists(path):
        time.sleep(0.01)
    return "released"


def test_a_step_asks_ray_about_a_window_of_pending_reports_not_all(monkeypatch):
    @rf.flow
    def many():
        return [echo(i) for i in range(40)]

    plan = compile_plan(many.graph, many)
    asked: list[int] = []
    real_wait = ray.wait

    def counting_wait(refs, *args, **kwargs):
        asked.append(len(refs))
        return real_wait(refs, *args, **kwargs)

    monkeypatch.setattr(ray, "wait", counting_wait)
    monkeypatch.setattr(ray_executor, "WINDOW", 4)
    monkeypatch.setattr(ray_executor, "SWEEP_SECONDS", 3600.0)  # the one sweep: the first step's
    summary = Orchestrator(plan, RayExecutor("window"), "window").run()
    assert [state.type for state in summary.task_states.values()] == [T.SUCCESS] * 40
    # the first step, with every work pending, sweeps them all (and waits on them all, none being
    # ready yet); every later one asks about the 4 oldest at most
    assert asked[0] == 40 and all(n <= 4 for n in asked[2:]) and len(asked) > 2


def test_a_report_ready_beyond_the_window_is_collected_while_older_works_still_run(tmp_path, monkeypatch):
    gate = str(tmp_path / "release")

    @rf.flow
    def two():
        return [held(gate), echo(1)]

    plan = compile_plan(two.graph, two)
    monkeypatch.setattr(ray_executor, "WINDOW", 1)
    monkeypatch.setattr(ray_executor, "SWEEP_SECONDS", 0.05)
    executor = RayExecutor("beyond")
    orchestrator = Orchestrator(plan, executor, "beyond")
    orchestrator.start()
    orchestrator.step(0.05)  # launches both, `held` first: the window holds only `held`
    assert [work.task_key for work, _ in executor._pending.values()][0] == "held"

    def echo_done() -> bool:
        orchestrator.step(0.05)
        return orchestrator.states["echo"].is_finished()

    wait_for(echo_done, what="echo, beyond the window, to be collected")
    assert orchestrator.states["echo"].type is T.SUCCESS
    assert not orchestrator.states["held"].is_finished()
    open(gate, "w").close()
    wait_for(lambda: orchestrator.step(0.05) or orchestrator.done, what="held to end")
    assert orchestrator.states["held"].type is T.SUCCESS


def test_a_report_travels_as_plain_pickle_bytes_unless_only_cloudpickle_can_ship_it():
    error = ErrorInfo(type="builtins.ValueError", message="no", traceback="tb")
    report = AttemptResult(task_key="t", attempt=2, type=T.FAILED, started_at=1.0, finished_at=2.0, error=error, logs=(("x",),))
    packed = _packed(report)
    assert isinstance(packed, bytes) and _unpacked(packed) == report
    local = AttemptResult(task_key="t", attempt=1, type=T.PAUSED, started_at=1.0, finished_at=2.0, pause=(lambda: 1, None))
    assert _packed(local) is local and _unpacked(local) is local  # Ray's serialiser (cloudpickle) ships it


@ray.remote(num_cpus=0)
class _Starts:
    def attempt_started(self, run_id: str, work_id: int, at: float, node: str | None = None) -> None:
        pass


def test_a_plain_work_goes_as_one_bytes_argument_and_a_timed_one_as_before(monkeypatch):
    """A work that reports no start travels as one plain-pickle bytes argument (payload, work, run
    id): Ray ships bytes as they are.  One whose start the actor must hear of (a timeout here)
    carries the actor's handle, which only Ray's serialiser ships: two arguments, as before."""
    timed = echo.with_options(name="timed", timeout=60)

    @rf.flow
    def mixed():
        return [echo(1), echo(2), timed(3)]

    plan = compile_plan(mixed.graph, mixed)
    packed: list[str] = []
    real = ray_executor._packed_head

    def recording(payload, work, run_id):
        packed.append(work.task_key)
        return real(payload, work, run_id)

    monkeypatch.setattr(ray_executor, "_packed_head", recording)
    starts = _Starts.remote()  # stands for the FlowRunActor: told when the timed work starts
    summary = Orchestrator(plan, RayExecutor("packed", starts), "packed").run()
    assert [s.type for s in summary.task_states.values()] == [T.SUCCESS] * 3
    assert ray.get([summary.handles[k] for k in summary.task_states]) == [1, 2, 3]
    assert sorted(packed) == sorted(k for k in summary.task_states if k != "timed")


def test_a_wide_flow_s_step_waits_briefly_for_more_reports(monkeypatch):
    """With BATCH_FROM or more reports pending, a step that finds fewer than BATCH ready waits up
    to BATCH_SECONDS for more (fewer, fuller steps); with fewer pending it never does."""
    count = ray_executor.BATCH_FROM + 6

    @rf.flow
    def wide():
        return [echo(i) for i in range(count)]

    plan = compile_plan(wide.graph, wide)
    calls: list[tuple[int, int, float | None]] = []
    real_wait = ray.wait

    def recording(refs, *args, num_returns=1, timeout=None, **kwargs):
        calls.append((len(refs), num_returns, timeout))
        return real_wait(refs, *args, num_returns=num_returns, timeout=timeout, **kwargs)

    monkeypatch.setattr(ray, "wait", recording)
    summary = Orchestrator(plan, RayExecutor("batch"), "batch").run()
    assert [s.type for s in summary.task_states.values()] == [T.SUCCESS] * count
    batched = [c for c in calls if c[2] == ray_executor.BATCH_SECONDS and c[1] == ray_executor.BATCH]
    assert batched and all(size >= ray_executor.BATCH_FROM for size, _, _ in batched)
