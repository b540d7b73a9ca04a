"""Tasks asking for resources no node has: refused up front on a cluster that cannot grow,
failed after a bounded wait where an autoscaler may add a node; busy resources only wait.

The session's Ray is one node with 2 CPUs, no GPU, no custom resources, started by this
process (so it cannot grow).  The autoscaler cases are decided by pure functions, tested
with the observations faked; the bounded wait itself runs on real Ray with only the
"may grow" verdict faked.
"""

from __future__ import annotations

import pathlib
import textwrap
import threading
import time

import pytest
import ray
from cli_runner import run_cli

import rayflow as rf
from rayflow.runtime.driver import resources
from rayflow.runtime.actor.resource_waits import ResourceWaits
from rayflow.runtime.driver.resources import AUTOSCALING, FIXED, UNKNOWN, ClusterView, decide, growth_of, task_request
from rayflow.states import StateType

GiB = 2**30


@rf.task
def touch(path: str) -> str:
    pathlib.Path(path).write_text("ran")
    return path


@rf.task
def double(x: int) -> int:
    return 2 * x


# -- the decision, with the cluster faked -------------------------------------------


def test_request_defaults_to_one_cpu_and_drops_zero_amounts():
    assert task_request(touch.options) == {"CPU": 1.0}
    gpu = touch.with_options(num_gpus=1).options
    assert task_request(gpu) == {"CPU": 1.0, "GPU": 1.0}
    custom = touch.with_options(num_cpus=0, resources={"foo": 0.5, "bar": 0}, memory=GiB).options
    assert task_request(custom) == {"foo": 0.5, "memory": float(GiB)}


def test_fractional_custom_and_memory_requests_compare_with_node_totals():
    node = {"CPU": 2.0, "memory": 4.0 * GiB, "foo": 0.5, "node:10.0.0.1": 1.0}
    view = ClusterView((node,), FIXED)
    requests = {
        "half_cpu": {"CPU": 0.5}, "all_cpus": {"CPU": 2.0}, "third_foo": {"CPU": 1.0, "foo": 1 / 3},
        "all_memory": {"CPU": 1.0, "memory": 4.0 * GiB},
        "three_cpus": {"CPU": 3.0}, "more_foo": {"CPU": 1.0, "foo": 0.6}, "more_memory": {"CPU": 1.0, "memory": 4.0 * GiB + 1e6},
        "gpu": {"CPU": 1.0, "GPU": 1.0}, "bar": {"CPU": 1.0, "bar": 1.0},
    }
    refused, waiting = decide(requests, view)
    assert set(refused) == {"three_cpus", "more_foo", "more_memory", "gpu", "bar"}
    assert waiting == {}


def test_a_cluster_that_may_grow_waits_unless_no_node_type_it_may_add_fits():
    cpu_node = {"CPU": 2.0}
    requests = {"gpu": {"CPU": 1.0, "GPU": 1.0}, "tpu": {"CPU": 1.0, "TPU": 4.0}, "cpu": {"CPU": 1.0}}
    assert decide(requests, ClusterView((cpu_node,), UNKNOWN)) == ({}, {"gpu": requests["gpu"], "tpu": requests["tpu"]})
    grows_gpus = ClusterView((cpu_node,), AUTOSCALING, groups=({"CPU": 8.0, "GPU": 1.0},))
    assert decide(requests, grows_gpus) == ({"tpu": requests["tpu"]}, {"gpu": requests["gpu"]})


def test_growth_is_read_from_what_ray_reports():
    ids = ["a1", "b2"]
    readonly = {"autoscaler_report": {"active_nodes": {"node_a1": 1, "node_b2": 1}, "pending_launches": {},
                                      "node_type_mapping": {"10.0.0.1": "node_a1", "10.0.0.2": "node_b2"}}}
    launcher = {"autoscaler_report": {"active_nodes": {"ray.head.default": 1}, "pending_launches": {}}}
    launching = {"autoscaler_report": {"active_nodes": {"node_a1": 1}, "pending_launches": {"gpu_workers": 1}}}
    common = {"started_here": False, "groups": None, "v2": False, "node_ids": ids}
    assert growth_of(**{**common, "started_here": True, "v1_status": launcher}) == (FIXED, None)
    assert growth_of(**{**common, "v1_status": readonly}) == (FIXED, None)
    assert growth_of(**{**common, "v1_status": launcher}) == (AUTOSCALING, None)
    assert growth_of(**{**common, "v1_status": launching}) == (AUTOSCALING, None)
    assert growth_of(**{**common, "v1_status": {"time": 1.0}}) == (UNKNOWN, None)  # the monitor has not reported yet
    assert growth_of(**{**common, "v1_status": None}) == (UNKNOWN, None)  # no monitor at all
    assert growth_of(**{**common, "v2": True, "v1_status": readonly}) == (UNKNOWN, None)
    groups = ({"CPU": 4.0, "GPU": 1.0},)
    assert growth_of(**{**common, "groups": groups, "v1_status": readonly}) == (AUTOSCALING, groups)


class _Spec:
    def __init__(self, key: str, wait: float | None = 5.0):
        self.key, self.resource_wait, self.options = key, wait, touch.with_options(num_gpus=1).options


class _Work:
    def __init__(self, work_id: int, job: object = None):
        self.work_id, self.job, self.persist = work_id, job, None


def test_resource_waits_end_when_one_work_is_placed_or_the_wait_is_over():
    now = [0.0]
    waits = ResourceWaits(clock=lambda: now[0])
    gpu, other = _Spec("gpu"), _Spec("other", wait=50.0)
    assert waits.track(gpu, _Work(1), forward=False) and waits.track(gpu, _Work(2), forward=True)
    assert not waits.track(_Spec("fits", wait=None), _Work(3), forward=False)
    waits.track(other, _Work(4), forward=False)
    assert waits.next_deadline() == 5.0
    assert waits.started(2) is True  # the orchestrator wants this start (a timeout)
    assert waits.next_deadline() == 50.0  # a node fits "gpu": work 1 now waits without a deadline
    assert waits.started(1) is True and not waits.track(gpu, _Work(5), forward=False)
    now[0] = 49.0
    assert waits.expired() == []
    now[0] = 51.0
    [(work, message)] = waits.expired()
    assert work.work_id == 4 and "task 'other' asks for {'CPU': 1, 'GPU': 1}" in message and "50s" in message
    assert waits.given_up("other") == message and waits.given_up("gpu") is None
    # A cancelled work says nothing about its task; one that finished was placed, start heard or not.
    late, done = _Spec("late"), _Spec("done")
    waits.track(late, _Work(6), forward=False)
    waits.track(done, _Work(7), forward=False)
    waits.track(done, _Work(8), forward=False)
    waits.forget(6)
    waits.finished(7)
    assert waits.next_deadline() is None
    now[0] = 100.0
    assert waits.expired() == [] and waits.given_up("late") is None and not waits.track(done, _Work(9), forward=False)


# -- on real Ray ---------------------------------------------------------------------


def _gpu_flow(marker: pathlib.Path):
    @rf.task(num_gpus=1)
    def train(path: str) -> str:
        return path

    @rf.flow
    def needs_gpu():
        return train(touch(str(marker)))

    return needs_gpu


@pytest.mark.timeout(60)
def test_a_gpu_task_on_a_cpu_only_ray_is_refused_before_anything_runs(ray_session, tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(rf.UnsatisfiableResourcesError) as caught:
        _gpu_flow(marker).run()
    error = caught.value
    assert not marker.exists()  # touch() comes first and has all it needs, yet nothing was submitted
    assert error.task_key == "train" and error.request == {"CPU": 1.0, "GPU": 1.0}
    assert error.largest_node["CPU"] == 2.0 and "GPU" not in error.largest_node
    message = str(error)
    assert message.startswith("task 'train' asks for {'CPU': 1, 'GPU': 1} but no node of this Ray cluster (1 node) has that")
    assert "cannot add one" in message and "the largest node has {" in message and "'CPU': 2" in message
    assert "\n" not in message


@pytest.mark.timeout(60)
def test_custom_cpu_and_memory_requests_no_node_has_are_refused_mapped_tasks_too(ray_session):
    total_memory = max(n["Resources"].get("memory", 0) for n in ray.nodes() if n["Alive"])

    @rf.flow
    def mapped(xs: list[int]):
        return double.with_options(name="foo_map", resources={"foo": 1}).map(xs)

    with pytest.raises(rf.UnsatisfiableResourcesError, match=r"task 'foo_map' asks for \{'CPU': 1, 'foo': 1\}") as caught:
        mapped.run(xs=[1, 2, 3])
    assert caught.value.request == {"CPU": 1.0, "foo": 1.0}

    @rf.flow
    def greedy():
        return [double.with_options(name="many_cpus", num_cpus=64)(1), double.with_options(name="much_memory", memory=int(total_memory * 2))(2)]

    with pytest.raises(rf.UnsatisfiableResourcesError) as caught:
        greedy.run()
    assert set(caught.value.requests) == {"many_cpus", "much_memory"}
    assert "task 'many_cpus' asks for {'CPU': 64}" in str(caught.value) and "task 'much_memory' asks for {'CPU': 1, 'memory':" in str(caught.value)


@pytest.mark.timeout(60)
def test_satisfiable_fractional_and_memory_requests_still_run(ray_session):
    @rf.flow
    def modest(xs: list[int]):
        small = double.with_options(name="half", num_cpus=0.5, memory=64 * 2**20)(1)
        return small, double.with_options(name="quarter", num_cpus=0.25).map(xs)

    half, quarters = modest(xs=[1, 2, 3])
    assert half == 2 and quarters == [2, 4, 6]


@pytest.mark.timeout(90)
def test_a_resource_that_exists_but_is_busy_waits_instead_of_being_refused(ray_session):
    """An actor holds one of the node's 2 CPUs: a task asking for 2 waits until it is let go."""

    @ray.remote(num_cpus=1)
    class Holder:
        def ping(self) -> bool:
            return True

    holder = Holder.remote()
    ray.get(holder.ping.remote())

    @rf.flow
    def wide():
        return double.with_options(name="both_cpus", num_cpus=2)(21)

    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("run", wide.run()), daemon=True)
    thread.start()
    thread.join(2.0)
    assert thread.is_alive() and not outcome  # neither refused nor run: waiting for the CPU
    ray.kill(holder)
    thread.join(60)
    assert outcome["run"].result() == 42


@pytest.mark.timeout(90)
def test_where_an_autoscaler_may_add_a_node_the_task_fails_after_its_wait(ray_session, monkeypatch, caplog):
    """Only the verdict "may grow" is faked: the task is submitted to the real Ray, stays
    unplaced (no node has 'never'), and fails after resource_wait; the rest of the run goes on."""
    real = resources.observe_cluster
    monkeypatch.setattr(resources, "observe_cluster", lambda: ClusterView(real().nodes, AUTOSCALING))
    monkeypatch.setenv(resources.RESOURCE_WAIT_ENV, "1.5")  # the map's wait; the task sets its own

    @rf.flow
    def grows():
        lonely = double.with_options(name="lonely", resources={"never": 1}, resource_wait=1.0)(1)
        items = double.with_options(name="lonely_map", resources={"never": 1}).map([1, 2, 3])
        return lonely, items, double(5)

    started = time.time()
    with caplog.at_level("WARNING", logger="rayflow.runtime.driver.resources"):
        run = grows.run()
    took = time.time() - started
    assert run.task_states["double"].type is StateType.SUCCESS  # the rest of the run went on
    assert run.task_result("double") == 10
    lonely = run.task_states["lonely"]
    assert lonely.type is StateType.FAILED and lonely.attempt == 1
    assert lonely.message.startswith("task 'lonely' asks for {'CPU': 1, 'never': 1} but no node of this Ray cluster had that after waiting 1s")
    assert lonely.error.type == "rayflow.exceptions.UnsatisfiableResourcesError"
    assert run.task_states["lonely_map"].is_failed()
    items = run.map_states("lonely_map")
    assert len(items) == 3 and all(s.is_failed() and "asks for {'CPU': 1, 'never': 1}" in s.message and "1.5s" in s.message for s in items)
    assert took < 30, took  # bounded: nothing waits forever
    warned = [r.getMessage() for r in caplog.records if "which no node of this Ray cluster has yet" in r.getMessage()]
    assert any("task 'lonely'" in w and "waits up to 1s" in w for w in warned), warned
    assert not any("double" in w for w in warned)


CLI_FLOW = """
import rayflow as rf

@rf.task(num_gpus=1)
def train() -> int:
    return 1

@rf.flow
def gpu_flow():
    return train()
"""


@pytest.mark.timeout(120)
def test_cli_refuses_an_unsatisfiable_task_in_one_line_exit_2(ray_session, tmp_path):
    """The CLI joins the session's Ray by address (a ``ray.init`` cluster: its read-only monitor
    reports node types ``node_<id>``, so it cannot grow)."""
    flow_file = tmp_path / "gpu_flow.py"
    flow_file.write_text(textwrap.dedent(CLI_FLOW))
    out = run_cli("run", f"{flow_file}:gpu_flow", "--address", ray_session, home=tmp_path / "home")
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "task 'train' asks for {'CPU': 1, 'GPU': 1} but no node of this Ray cluster (1 node) has that" in lines[0]
