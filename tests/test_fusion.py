"""Fused element-wise map chains (core.fusion): the same run as unfused, item by item, on both runners.

A chain ``h.map(g.map(f.map(xs)))`` runs fused: a chunk of f, then g and h on its items in the
same worker call, as long as each stage's chunk settles on its first run.  Where one does not
(an item to retry), the rest of that chunk runs unfused.  These tests run the same chain both
ways and compare every item's state, attempt and message, the tasks' states, the values and the
history's chunk records, and check which chunks did run fused.
"""

from __future__ import annotations

import os
import pathlib
import signal
import threading
import time

import pytest

import rayflow as rf
from rayflow.core.fusion import plan_fusion
from rayflow.engine.plan import compile_plan
from rayflow.states import StateType as T
from rayflow.store import RunStore
from cli_runner import run_cli_in_process
from waiting import wait_for


def _attempt(root: str, name: str, x: int) -> int:
    """This call's attempt at item ``x`` of task ``name``, counted in a file every process sees."""
    calls = pathlib.Path(root) / f"{name}-{x}.calls"
    n = int(calls.read_text()) + 1 if calls.exists() else 1
    calls.write_text(str(n))
    return n


@rf.task(retries=1, retry_on=(OSError,), chunk_size=6)
def first(x: int, root: str) -> int:
    if x % 13 == 7:
        raise ValueError(f"never {x}")  # not retried: final, its chunk still settles
    if x % 9 == 4 and _attempt(root, "first", x) == 1:
        raise OSError(f"once {x}")  # retried: its chunk does not settle on its first run
    return x


@rf.task
def second(x: int) -> int:
    if x % 5 == 0:
        raise rf.Skip(f"skip {x}")
    return x + 1000


@rf.task(retries=1)
def third(x: int, root: str) -> int:
    if x % 7 == 2 and _attempt(root, "third", x) == 1:
        raise OSError(f"once {x}")
    return 2 * x


def _chain(fuse: bool, root: str):
    @rf.flow(name=f"chain_{'fused' if fuse else 'unfused'}", fuse=fuse)
    def chain(n: int = 60):
        return third.map(second.map(first.map(range(n), rf.unmapped(root))), rf.unmapped(root))

    return chain


def _facts(run) -> dict:
    items = {key: [(s.type, s.attempt, s.message) for s in run.map_states(key)] for key in ("first", "second", "third")}
    tasks = {key: (s.type, s.message) for key, s in run.task_states.items()}
    recorded = RunStore().run(run.run_id)
    rows: dict[str, int] = {}
    fused: dict[str, list[tuple[int, str]]] = {}
    for chunk in recorded["chunks"]:
        rows[chunk["task_key"]] = rows.get(chunk["task_key"], 0) + 1
        if chunk["fused"]:
            fused.setdefault(chunk["task_key"], []).append((chunk["start"], chunk["fused"]))
    return {"items": items, "tasks": tasks, "flow": run.state.type, "values": run.task_result("third"), "rows": rows,
            "fused": fused, "graph": recorded["graph"].get("fused")}


def test_a_fused_chain_ends_as_the_unfused_one_item_by_item(runner, tmp_path):
    """Failures (final and retried), skips, trigger failures and retries in every stage: the
    fused run and the unfused one agree on every item, task, value and chunk record."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    unfused = _facts(_chain(False, str(tmp_path / "a")).with_options(runner=runner).run())
    fused = _facts(_chain(True, str(tmp_path / "b")).with_options(runner=runner).run())
    for key in ("items", "tasks", "flow", "values", "rows"):
        assert fused[key] == unfused[key], key
    first_items = unfused["items"]["first"]
    assert first_items[7][:2] == (T.FAILED, 1) and first_items[4][:2] == (T.SUCCESS, 2)
    assert unfused["items"]["second"][7][0] is T.TRIGGER_FAILED and unfused["items"]["second"][10][0] is T.SKIPPED
    assert unfused["items"]["third"][3][:2] == unfused["items"]["third"][24][:2] == (T.SUCCESS, 2)  # 1003 % 7 == 2: retried
    # Chunks of `first` (6 items each) with no item to retry ran fused: [6, 12), [24, 30), [42, 48).
    # `second` retries nothing, so `third` ran behind each of its chunks, those that waited for
    # `first`'s retries too; the retry of third's item 24 ran unfused, later.
    assert fused["fused"] == {"second": [(6, "first"), (24, "first"), (42, "first")],
                              "third": [(start, "second") for start in range(0, 60, 6)]}
    assert unfused["fused"] == {} and unfused["graph"] is None
    assert fused["graph"] == [["first", "second", "third"]]


@rf.task
def scale(x: int) -> int:
    return 2 * x


@rf.task(chunk_size=3)
def expand(x: int) -> list[int]:
    if x == 4:
        raise ValueError("four")
    return list(range(x % 4))


def test_a_chain_through_a_flatten_fuses_where_its_start_is_known(runner):
    """``inc.map(rf.flatten(expand.map(xs)))``: the first chunk of expand goes on fused (nothing
    before it), later ones once every earlier chunk ended; items, values and states as unfused."""
    out = {}
    for fuse in (True, False):
        flow = rf.flow(name=f"flat_{fuse:d}", fuse=fuse, runner=runner)(lambda: scale.map(second.map(rf.flatten(expand.map(range(13))))))
        run = flow.run()
        rows = RunStore().run(run.run_id)["chunks"]
        out[fuse] = ({k: [(s.type, s.message) for s in run.map_states(k)] for k in ("expand", "second", "scale")},
                     run.task_result("scale"), [(r["task_key"], r["start"], r["fused"]) for r in rows if r["fused"]])
    assert out[True][:2] == out[False][:2] and out[False][2] == []
    flat = [y for x in range(13) if x != 4 for y in range(x % 4)]  # item 4 failed: nothing of it
    assert out[True][1] == [None if y % 5 == 0 else 2 * (y + 1000) for y in flat]  # second skips multiples of 5
    assert ("second", 0, "expand") in out[True][2] and ("scale", 0, "second") in out[True][2]


def _hold(root: str, name: str) -> None:
    """Say this item runs, then wait until cancelled (a thread cannot be killed: it returns on its own once released)."""
    (pathlib.Path(root) / name).touch()
    wait_for(lambda: (pathlib.Path(root) / "released").exists(), timeout=60, what="the test to release the item")


@rf.task(chunk_size=6)
def held_head(x: int, root: str) -> int:
    if x == 11:
        _hold(root, "head")  # the head's second chunk: the head is still running when the run is cancelled
    return x


@rf.task
def held_tail(x: int, root: str) -> int:
    if x == 1002:  # item 1 (second adds 1000)
        _hold(root, "tail")  # in the first chunk's last stage (fused: inside the head's work)
    return x


def _held_chain(fuse: bool, root: str):
    @rf.flow(name=f"held_{'fused' if fuse else 'unfused'}", fuse=fuse)
    def held():
        return held_tail.map(second.map(held_head.map(range(1, 13), rf.unmapped(root))), rf.unmapped(root))

    return held


def _cancelled(flow, root: pathlib.Path, runner: str, run_id: str) -> dict:
    """Run ``flow``, cancel it once both held items run, and say how its tasks ended."""
    both = lambda: (root / "head").exists() and (root / "tail").exists()  # noqa: E731
    if runner == "ray":
        from rayflow.runtime.driver.actors import cancel_run

        holder: dict = {}
        thread = threading.Thread(target=lambda: holder.setdefault("run", flow.with_options(runner=runner, run_id=run_id).run()))
        thread.start()
        wait_for(both, timeout=60, what="both held items running")
        assert cancel_run(run_id).type is T.CANCELLED
        thread.join(60)
        return {k: s.type for k, s in holder["run"].task_states.items()}
    from rayflow.engine.driver.local_executor import LocalExecutor
    from rayflow.engine.orchestrator import Orchestrator

    executor = LocalExecutor()
    orch = Orchestrator(compile_plan(flow.graph, flow), executor, run_id)
    orch.start()
    wait_for(lambda: orch.step(0.05) or both(), timeout=60, what="both held items running")
    orch.request_cancel()
    orch.step(0)
    (root / "released").touch()  # the abandoned threads return; their results are not taken
    executor.shutdown()
    assert orch.done
    return {k: s.type for k, s in orch.states.items()}


def test_cancelling_a_run_inside_a_fused_chain_cancels_as_unfused(runner, tmp_path):
    """Cancelled while the last stage's item runs (fused: inside the head's work) and the head's
    next chunk too: every task of the chain is CANCELLED, as unfused, and nothing finishes after."""
    states = {}
    for fuse in (False, True):
        root = tmp_path / ("on" if fuse else "off")
        root.mkdir()
        states[fuse] = _cancelled(_held_chain(fuse, str(root)), root, runner, f"fuse-cancel-{runner}-{fuse:d}")
    assert states[True] == states[False] == {"held_head": T.CANCELLED, "second": T.CANCELLED, "held_tail": T.CANCELLED}


@rf.task(chunk_size=2)
def head_item(x: int, root: str) -> int:
    _attempt(root, "head", x)
    return x


@rf.task
def victim_stage(x: int, root: str) -> int:
    if _attempt(root, "stage", x) == 1 and x == 5:
        (pathlib.Path(root) / "victim.pid").write_text(str(os.getpid()))
        time.sleep(60)
    return 10 * x


def test_a_worker_lost_inside_a_fused_chunk_runs_that_chunk_again_unfused(tmp_path, ray_session):
    """SIGKILL while a fused stage runs: the whole fused work is lost (the head's chunk too), is
    split as any lost chunk is, and runs again unfused; only that chunk's items run twice."""

    @rf.flow
    def fragile():
        return victim_stage.map(head_item.map(range(8), rf.unmapped(str(tmp_path))), rf.unmapped(str(tmp_path)))

    holder: dict = {}
    thread = threading.Thread(target=lambda: holder.setdefault("run", fragile.run()))
    thread.start()
    pid = wait_for(lambda: (tmp_path / "victim.pid").exists() and (tmp_path / "victim.pid").read_text(), timeout=60)
    os.kill(int(pid), signal.SIGKILL)
    thread.join(60)
    run = holder["run"]
    assert run.result() == [10 * x for x in range(8)]
    assert all(s.type is T.SUCCESS for key in ("head_item", "victim_stage") for s in run.map_states(key))
    calls = {p.stem: int(p.read_text()) for p in tmp_path.glob("*.calls")}
    twice = {"head-4", "head-5", "stage-4", "stage-5"}
    assert calls == {f"{name}-{x}": 2 if f"{name}-{x}" in twice else 1 for name in ("head", "stage") for x in range(8)}
    retried = [c for c in RunStore().run(run.run_id)["chunks"] if c["task_key"] == "head_item" and c["start"] in (4, 5)]
    # the lost work's record, then its halves', each run unfused
    assert sorted((c["start"], c["stop"], c["fused"]) for c in retried) == [(4, 5, None), (4, 6, None), (5, 6, None)]


# -- the rules -------------------------------------------------------------------------------


@rf.task
def plus(x: int, y: int = 0) -> int:
    return x + y


@rf.task
def summed(xs: list) -> int:
    return sum(xs)


def _fusion(body, **options):
    flow = rf.flow(name="rules", **options)(body)
    return plan_fusion(flow.graph.nodes, flow.options)


def test_a_chain_of_element_wise_maps_fuses_head_first():
    fusion = _fusion(lambda: summed(plus.map(plus.map(plus.map(range(4))))))
    assert fusion.chains == (("plus", "plus-2", "plus-3"),) and fusion.refused == ()


@pytest.mark.parametrize(
    "body, why",
    [
        (lambda: plus.map(plus.map(range(3)), range(3)), "plus-2 maps over more than plus"),
        (lambda: plus.map(plus.map(range(3)), rf.unmapped(plus(1))), None),  # an unmapped other task: fused
        (lambda: [summed(a := plus.map(range(3))), plus.map(a)], "plus's result is used by summed too"),
        (lambda: plus.with_options(batch=True).map(plus.map(range(3))), "one is batch=True and the other is not"),
        (lambda: plus.with_options(num_cpus=0.5).map(plus.map(range(3))), "their resources or runtime environments differ"),
        (lambda: plus.with_options(tags={"db"}).map(plus.map(range(3))), "a tagged task's chunks wait for its limits on their own"),
        (lambda: plus.with_options(persist=True).map(plus.map(range(3))), "plus-2 persists its results"),
        (lambda: plus.with_options(cache_key_fn=rf.cache.inputs).map(plus.map(range(3))), "plus-2 caches its items"),
    ],
)
def test_fusion_is_refused_where_it_would_change_meaning(body, why):
    fusion = _fusion(body)
    if why is None:
        assert fusion.chains == (("plus", "plus-3"),)  # plus(1) is plus-2
    else:
        assert fusion.chains == () and [r[2] for r in fusion.refused] == [why]


def test_fuse_false_runs_unfused_and_a_flatten_fuses():
    assert _fusion(lambda: plus.map(plus.map(range(3))), fuse=False).refused == (("plus", "plus-2", "the flow has fuse=False"),)
    assert _fusion(lambda: plus.map(rf.flatten(expand.map(range(3))))).chains == (("expand", "plus"),)


# -- what a person sees --------------------------------------------------------------------


@rf.flow
def fused_pair(n: int = 4):
    return summed(plus.map(plus.map(range(n)), rf.unmapped(1)))


def test_rayflow_graph_and_the_ui_draw_fused_edges(tmp_path):
    from rayflow.ui.svg import graph_svg

    mermaid = run_cli_in_process("graph", "tests/test_fusion.py:fused_pair", home=tmp_path)
    assert mermaid.returncode == 0, mermaid.stderr
    assert "n_plus ==>|fused| n_plus_2" in mermaid.stdout and "n_plus_2 --> n_summed" in mermaid.stdout
    dot = run_cli_in_process("graph", "tests/test_fusion.py:fused_pair", "--format", "dot", home=tmp_path)
    assert 'n_plus -> n_plus_2 [style=bold, penwidth=2, label="fused"];' in dot.stdout
    unfused = fused_pair.with_options(fuse=False)
    assert plan_fusion(unfused.graph.nodes, unfused.options).chains == ()
    shape = compile_plan(fused_pair.graph, fused_pair)
    svg = graph_svg({"nodes": [{"key": s.key, "name": s.name, "kind": s.kind, "upstream": list(s.upstream), "wait_for": [],
                                "conditions": []} for s in shape.specs], "fused": [list(c) for c in shape.fused]}, [])
    assert svg.count('class="edge fused"') == 1 and "plus-2 runs fused with plus" in svg
