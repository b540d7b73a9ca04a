"""The engine without any executor of substance: plans and the orchestrator's exact states.

A scripted executor records submissions and finishes attempts only when the
test says so, so every intermediate state can be asserted.
"""

from __future__ import annotations

import subprocess
import sys

from flows import add, diamond, extract
from hypothesis import given, settings
from hypothesis import strategies as st

import rayflow as rf
from rayflow.engine.executor import Completion
from rayflow.engine.driver.local_executor import LocalBox
from rayflow.engine.observers import Callback
from rayflow.engine.orchestrator import Orchestrator
from rayflow.engine.plan import compile_plan
from rayflow.engine.worker.execute import execute
from rayflow.engine.protocol import AttemptResult, Work
from rayflow.states import State
from rayflow.states import StateType as T


class ScriptedExecutor:
    """Runs nothing by itself: ``finish(key)`` runs that task's latest work in-process."""

    def __init__(self, plan):
        self.plan = plan
        self.submitted: list[tuple[str, int]] = []
        self.works: dict[str, tuple[Work, list]] = {}
        self.finished: list[Completion] = []
        self.cancelled: list[str] = []

    def submit(self, spec, work, handles):
        self.submitted.append((spec.key, work.attempt))
        self.works[spec.key] = (work, handles)

    def finish(self, key):
        work, handles = self.works[key]
        values = [None if h is None else h.value for h in handles]
        value, report = execute(self.plan.by_key[key].payload, work, *values)
        self.finished.append(Completion(work, report, LocalBox(value)))

    def wait(self, timeout):
        done, self.finished = self.finished, []
        return done

    def cancel(self, work_id):
        self.cancelled.extend(k for k, (w, _) in self.works.items() if w.work_id == work_id)

    def put(self, value):
        return LocalBox(value)

    def fetch(self, handles):
        return [h.value for h in handles]


def test_orchestrator_steps_through_the_diamond():
    r"""
      extract
       /   \
    clean  audit
       \   /
       load
    """
    plan = compile_plan(diamond.graph_for(n=4))
    ex = ScriptedExecutor(plan)
    orch = Orchestrator(plan, ex, "run-1")
    orch.start()
    orch.step(0)
    assert ex.submitted == [("extract", 1)]
    assert orch.states["extract"].type is T.RUNNING
    assert {k: s.type for k, s in orch.states.items() if k != "extract"} == {
        "clean": T.PENDING,
        "audit": T.PENDING,
        "load": T.PENDING,
    }
    ex.finish("extract")
    orch.step(0)  # collects extract
    orch.step(0)  # launches both branches
    assert ex.submitted[1:] == [("clean", 1), ("audit", 1)]
    assert orch.blocking["load"] == 2
    ex.finish("audit")
    orch.step(0)
    orch.step(0)
    assert orch.blocking["load"] == 1 and ("load", 1) not in ex.submitted
    ex.finish("clean")
    orch.step(0)
    orch.step(0)
    assert ex.submitted[-1] == ("load", 1)
    ex.finish("load")
    orch.step(0)
    assert orch.done
    assert all(s.type is T.SUCCESS for s in orch.states.values())


def test_trigger_failure_is_settled_without_submitting():
    @rf.flow
    def chain():
        return add(extract("x"), 1)

    plan = compile_plan(chain.graph)
    ex = ScriptedExecutor(plan)
    orch = Orchestrator(plan, ex, "run-2")
    orch.start()
    orch.step(0)
    ex.finish("extract")
    orch.step(0)
    orch.step(0)
    assert orch.states["extract"].type is T.FAILED
    assert orch.states["add"].type is T.TRIGGER_FAILED
    assert ex.submitted == [("extract", 1)]
    assert orch.done


def test_cancel_marks_unfinished_tasks_cancelled():
    plan = compile_plan(diamond.graph_for(n=4))
    ex = ScriptedExecutor(plan)
    seen = []
    orch = Orchestrator(plan, ex, "run-3", observers=(Callback(lambda **kw: seen.append(kw)),))
    orch.start()
    orch.step(0)
    orch.request_cancel()
    orch.step(0)
    assert ex.cancelled == ["extract"]
    assert {s.type for s in orch.states.values()} == {T.CANCELLED}
    assert orch.done
    assert seen[0]["task_key"] is None and seen[0]["new"].type is T.RUNNING  # the flow's own state
    assert all(set(kw) == {"run_id", "task_key", "old", "new"} for kw in seen)


def test_stale_completions_are_ignored():
    plan = compile_plan(diamond.graph_for(n=1))
    orch = Orchestrator(plan, ScriptedExecutor(plan), "run-4")
    stale = AttemptResult("extract", 7, T.SUCCESS, 0.0, 0.0)
    orch.on_completion(Completion(Work(99, "extract", 7), stale, LocalBox(1)))
    assert orch.states["extract"].type is T.PENDING


def test_compile_binds_parameters_and_needs_no_ray():
    code = (
        "import sys; sys.path.insert(0, 'tests');"
        "from rayflow.core.flow import Flow;"
        "from rayflow.engine.plan import compile_plan;"
        "import flows;"
        "plan = compile_plan(flows.diamond.graph_for(n=3));"
        "print([s.key for s in plan.specs], plan.reference_keys);"
        "print('ray' in sys.modules)"
    )
    # Import only the lower layers, as a fresh process would.
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=str(__import__("pathlib").Path(__file__).parent.parent),
    )
    assert out.returncode == 0, out.stderr
    keys, ray_loaded = out.stdout.strip().splitlines()
    assert keys == "['extract', 'clean', 'audit', 'load'] ('load',)"
    assert ray_loaded == "False"


@st.composite
def random_dags(draw):
    """Edges i -> j only for i < j, so any drawn graph is acyclic."""
    n = draw(st.integers(min_value=1, max_value=12))
    parents = [draw(st.lists(st.integers(0, max(0, j - 1)), max_size=3, unique=True)) if j else [] for j in range(n)]
    names = draw(st.permutations([f"t{i}" for i in range(n)]))
    return n, parents, names


def _dag_flow(n, parents, names):
    tasks = [rf.task(name=names[j])(lambda *xs, j=j: j + sum(xs)) for j in range(n)]

    def body():
        nodes = []
        for j in range(n):
            nodes.append(tasks[j](*[nodes[p] for p in parents[j]]))
        return nodes

    return rf.flow(name="dag", runner="local")(body)


def _oracle(n, parents):
    values = []
    for j in range(n):
        values.append(j + sum(values[p] for p in parents[j]))
    return values


@settings(max_examples=40, deadline=None)
@given(random_dags())
def test_plans_are_topological_and_results_do_not_depend_on_names(dag):
    n, parents, names = dag
    flow = _dag_flow(n, parents, names)
    plan = compile_plan(flow.graph)
    position = {s.key: i for i, s in enumerate(plan.specs)}
    for spec in plan.specs:
        assert all(position[d] < position[spec.key] for d in spec.dependencies)
    assert set(plan.reference_keys) == {s.key for s in plan.specs if not plan.downstream[s.key]}
    assert flow() == _oracle(n, parents)


def test_every_state_is_stamped_by_the_injected_clock():
    """With a fake clock, no timestamp in the history comes from the wall clock: not the initial
    PENDING, not states made by policy rules or handlers, not the flow's final state."""
    from test_policy import FakeClock

    @rf.flow
    def chain():
        return add(add.with_options(retries=1, name="first")("x", 1), 1)

    plan = compile_plan(chain.graph)
    ex, clock = ScriptedExecutor(plan), FakeClock()
    orch = Orchestrator(plan, ex, "stamped", clock=clock)
    orch.start()
    orch.step(0)
    clock.now = 1001.0
    ex.finish("first")
    orch.step(0)
    clock.now = 1002.0
    orch.step(0)
    ex.finish("first")
    orch.step(0)
    orch.step(0)
    orch.set_flow_state(State(type=T.FAILED))
    stamps = {s.timestamp for states in orch.history.values() for s in states} | {orch.flow_state.timestamp}
    assert stamps == {1000.0, 1001.0, 1002.0}
    assert [s.type for s in orch.history["add"]] == [T.PENDING, T.TRIGGER_FAILED]
