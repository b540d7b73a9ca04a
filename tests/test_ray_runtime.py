"""What only the Ray runtime does: parallelism, resources, ObjectRefs, the named actor, joining clusters."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import ray
from cli_runner import run_cli
from flows import timed_sleep, two_branches
from waiting import wait_for

import rayflow as rf
from rayflow.runtime import find_run
from rayflow.runtime.driver import resources
from rayflow.runtime.driver.actors import driver_actor
from rayflow.states import StateType

REPO_ROOT = str(pathlib.Path(__file__).resolve().parent.parent)

pytestmark = pytest.mark.usefixtures("ray_session")


def overlap(a: dict, b: dict) -> float:
    return min(a["end"], b["end"]) - max(a["start"], b["start"])


def test_independent_branches_run_in_parallel():
    """
    sleep_a   sleep_b    on 2 CPUs: the two 1 s sleeps overlap almost entirely
    """
    two_branches(seconds=0.2)  # both workers up, as in any warm cluster
    run = two_branches.run(seconds=1.0)
    a, b = run.result()
    assert a["pid"] != b["pid"]
    # run one after the other, they would not overlap at all; on the 2-core machine with the other
    # xdist worker busy, Ray has started the second sleep up to 0.65 s late (a worker process to start)
    assert overlap(a, b) > 0.2, (a, b)


def test_num_cpus_reaches_ray_and_excludes_other_tasks():
    """
    hog(num_cpus=2)   sleep   sleep-2    (independent; the hog must run alone on 2 CPUs)
    """
    hog = timed_sleep.with_options(name="hog", num_cpus=2)

    @rf.task
    def assigned() -> dict:
        return ray.get_runtime_context().get_assigned_resources()

    @rf.flow
    def contended():
        return [hog(0.6, "hog"), timed_sleep(0.6, "x"), timed_sleep(0.6, "y"), assigned.with_options(num_cpus=2)()]

    h, x, y, resources = contended()
    assert overlap(h, x) <= 0 and overlap(h, y) <= 0, (h, x, y)
    assert resources == {"CPU": 2.0}


def pending_bundles() -> list[dict]:
    """The resource requests of tasks and actors Ray holds pending (from the GCS; no dashboard needed)."""
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(ray.get_runtime_context().gcs_address)
    return [r.bundle for demand in status.resource_demands.ray_task_actor_demand for r in demand.bundles_by_count]


def test_custom_resources_reach_ray(monkeypatch):
    # No node offers the resource, which rayflow refuses up front on a cluster that cannot
    # grow (tests/test_resources.py): here the cluster is said to autoscale, so it is submitted.
    real = resources.observe_cluster
    monkeypatch.setattr(resources, "observe_cluster", lambda: resources.ClusterView(real().nodes, resources.AUTOSCALING))

    @rf.task(resources={"rayflow_test_slot": 1}, num_cpus=0)
    def where() -> dict:
        return ray.get_runtime_context().get_assigned_resources()

    @rf.flow
    def custom():
        return where()

    # No node offers the resource: the task must stay pending, proving Ray got the request.
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("run", custom.with_options(run_id="custom-res").run()), daemon=True)
    thread.start()
    deadline = time.time() + 10
    summary = None
    while time.time() < deadline:
        try:
            _, summary = find_run("custom-res")
        except rf.UnknownRunError:
            time.sleep(0.1)
            continue
        if summary.task_states["where"].type is StateType.RUNNING:
            break
        time.sleep(0.1)
    assert summary is not None and summary.task_states["where"].type is StateType.RUNNING
    # Ray holds it as a demand no node can meet (its cluster status lists it), not run: an event
    # to wait for, where a sleep could only show it had not run yet.
    wait_for(lambda: {"rayflow_test_slot": 1.0} in pending_bundles(), timeout=30,
             what="Ray to list the task's resource request as pending")
    assert thread.is_alive(), "a task needing a resource no node has must not run"
    ray.get(driver_actor().cancel_run.remote("custom-res"))
    thread.join(15)
    assert result["run"].state.type is StateType.CANCELLED
    assert result["run"].task_states["where"].type is StateType.CANCELLED


class RecordsWhereLoaded:
    """Unpickling appends the loading process's pid to a file."""

    def __init__(self, log: str, payload: bytes):
        self.log, self.payload = log, payload

    def __reduce__(self):
        return (_load_recorded, (self.log, self.payload))


def _load_recorded(log, payload):
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return RecordsWhereLoaded(log, payload)


@rf.task
def make_blob(log: str, size: int) -> RecordsWhereLoaded:
    return RecordsWhereLoaded(log, b"x" * size)


@rf.task
def blob_size(blob: RecordsWhereLoaded) -> int:
    return len(blob.payload)


def test_values_pass_between_tasks_as_object_refs(tmp_path):
    """
    make_blob --(ObjectRef)--> blob_size      the 5 MB blob never visits the driver or the actor
    """
    log = str(tmp_path / "loads.txt")

    @rf.flow
    def blobs():
        return blob_size(make_blob(log, 5_000_000))

    run = blobs.run()
    assert run.result() == 5_000_000
    actor_pid = ray.get(driver_actor().__ray_call__.remote(lambda self: os.getpid()))
    loaded_in = {int(line) for line in open(log).read().split()}
    assert loaded_in, "the downstream task must have loaded the blob"
    assert os.getpid() not in loaded_in and actor_pid not in loaded_in
    assert isinstance(run._handles["make_blob"], ray.ObjectRef)
    held = ray.get(driver_actor().__ray_call__.remote(
        lambda self, run_id: (self._runs[run_id].summary.handles, self._runs[run_id].orchestrator.handles), run.run_id
    ))
    assert held == ({}, {})  # the actor handed its handles to the driver with the answer
    run.task_result("make_blob")  # fetching on demand is what loads it here (the driver's borrowed handle)
    assert os.getpid() in {int(line) for line in open(log).read().split()}


def test_run_is_reachable_by_name_from_another_process(ray_session):
    """A second process joins the cluster and finds the live run through the driver's named actor.

    The probe joins first and says so; only then does the run start, and the probe looks until
    it sees a task RUNNING (was: an 8 s run, long enough for the probe to start and join)."""
    probe = textwrap.dedent(
        f"""
        import json, sys, time, ray
        from rayflow.runtime import find_run
        ray.init(address={ray_session!r}, logging_level="error")
        print("joined", flush=True)
        deadline = time.time() + 30
        while True:
            try:
                actor, summary = find_run("live-run-1")
                if any(s.type.value == "RUNNING" for s in summary.task_states.values()):
                    break
            except Exception:
                if time.time() > deadline:
                    raise
            if time.time() > deadline:
                break
            time.sleep(0.1)
        print(json.dumps({{k: s.type.value for k, s in summary.task_states.items()}}))
        """
    )
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("run", two_branches.with_options(run_id="live-run-1").run(seconds=2.0))
    )
    proc = subprocess.Popen([sys.executable, "-c", probe], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "joined", "the probe did not join the session's Ray"
        thread.start()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if thread.ident is not None:  # started
            thread.join()
    assert proc.returncode == 0, stderr[-2000:]
    seen = json.loads(stdout.strip().splitlines()[-1])
    assert set(seen) == {"timed_sleep", "timed_sleep-2"}
    assert "RUNNING" in seen.values()
    assert result["run"].state.type is StateType.SUCCESS


def test_unknown_run_id_is_a_clear_error():
    with pytest.raises(rf.UnknownRunError, match="no-such-run"):
        find_run("no-such-run")


def test_a_run_id_the_history_has_is_refused_before_any_work(tmp_path):
    run = two_branches.with_options(run_id="dup-1").run(seconds=0.0)
    assert run.state.is_successful()
    with pytest.raises(rf.DuplicateRunError, match="'dup-1' is taken.*rayflow resume dup-1") as info:
        two_branches.with_options(run_id="dup-1").run(seconds=0.0)
    assert info.value.run_id == "dup-1"
    with pytest.raises(rf.DuplicateRunError):
        two_branches.with_options(run_id="dup-1", runner="local").run(seconds=0.0)
    out = run_cli("run", "tests/flows.py:two_branches", "--run-id", "dup-1", "--local", home=os.environ["RAYFLOW_HOME"])
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "is taken" in out.stderr, out.stderr


class _CountingHandle:
    """An actor handle that records the name of every actor method called through it."""

    def __init__(self, handle):
        self._handle = handle
        self.calls: list[str] = []

    def __getattr__(self, name):
        method = getattr(self._handle, name)
        calls = self.calls

        class _Method:
            def remote(self, *args, **kwargs):
                calls.append(name)
                return method.remote(*args, **kwargs)

        return _Method()


def test_a_warm_run_reuses_the_drivers_actor_and_waits_on_one_actor_call(monkeypatch):
    """What keeps the fixed cost of a run small, checked by what it does, not by timing it
    (benchmarks/run_overhead.py measures the cost itself: ``fixed_cost_first_run_s`` and
    ``fixed_cost_warm_run_s``): once the driver has its FlowRunActor, a one-task run joins no
    cluster, creates no actor, puts nothing in the object store from the driver, and calls
    the actor exactly once: start_run, which waits for a short run's end and hands over its
    value handles (the actor keeps only the states: no release call).
    """
    import rayflow.runtime.driver.runner as runner_module

    @rf.task
    def one():
        return 1

    @rf.flow
    def tiny():
        return one()

    assert tiny() == 1  # the first run may create the actor
    actor = driver_actor()
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}

    counting = _CountingHandle(actor)
    monkeypatch.setattr(runner_module, "driver_actor", lambda: counting)
    monkeypatch.setattr(runner_module, "POLL_SECONDS", 120.0)  # one wait_run, however slow the machine

    def refused(*args, **kwargs):
        raise AssertionError("a warm run must not call ray.init or ray.put")

    monkeypatch.setattr(ray, "init", refused)
    monkeypatch.setattr(ray, "put", refused)
    assert tiny() == 1
    assert counting.calls == ["start_run"]
    monkeypatch.undo()
    assert driver_actor()._ray_actor_id == actor._ray_actor_id  # the same actor, not a new one
    assert {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)} == names


# -- joining a cluster: these need a process where Ray is not yet initialised ------------


def _run_isolated(code: str, env: dict | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO_ROOT,
    )


def test_a_cancel_that_overtakes_its_start_run_cancels_the_run_as_it_starts():
    """Calls to the threaded actor may run out of order: a driver's Ctrl-C during start_run
    sends cancel_run, which can arrive first.  The run must still end CANCELLED, not run on."""
    from rayflow.engine.plan import compile_plan

    @rf.flow
    def slow():
        return timed_sleep(30.0, "never")

    actor = driver_actor()
    run_id = "cancel-first-" + os.urandom(4).hex()
    ray.get(actor.cancel_run.remote(run_id))  # nothing to cancel yet: remembered
    _, summary = ray.get(actor.start_run.remote(run_id, compile_plan(slow.graph, slow), None, None, 20.0))
    assert summary is not None, "the run went on instead of being cancelled"
    assert summary.state.type is StateType.CANCELLED
    assert summary.task_states["timed_sleep"].type is StateType.CANCELLED


JOINING = {  # name: (code, extra environment); {address}, {closed} and {silent} filled in by ``joined``
    "by address": ("""
        import sys; sys.path.insert(0, "tests")
        import ray, flows
        run = flows.diamond.with_options(address={address!r}).run(n=4)
        print(run.result() == flows.diamond_calc(4), ray.get_runtime_context().gcs_address)
        """, {}),
    "closed port": ("""
        import sys, time; sys.path.insert(0, "tests")
        import flows, rayflow as rf
        t = time.time()
        try:
            flows.diamond.with_options(address="127.0.0.1:{closed}").run()
        except rf.ClusterConnectionError as e:
            print(round(time.time() - t, 1), e.address, "|", e)
        """, {}),
    "silent listener": ("""
        import sys, time; sys.path.insert(0, "tests")
        import flows, rayflow as rf
        t = time.time()
        try:
            flows.diamond.with_options(address="ray://127.0.0.1:{silent}").run()
        except rf.ClusterConnectionError as e:
            print(round(time.time() - t, 1), "|", e)
        """, {"RAYFLOW_CONNECT_TIMEOUT": "2"}),
    "RAY_ADDRESS": ("""
        import sys; sys.path.insert(0, "tests")
        import ray, flows
        print(flows.diamond(n=3) == flows.diamond_calc(3), ray.get_runtime_context().gcs_address)
        """, {"RAY_ADDRESS": "{address}"}),
}


@pytest.fixture(scope="module")
def joined(ray_session) -> dict:
    """Each process of JOINING, run at once (each is seconds of start-up and of waiting on Ray or
    on a port: together they take about as long as the slowest); by name, with the ports used."""
    import concurrent.futures

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # closed again: nothing listens there
    listener = socket.socket()  # accepts connections but never speaks Ray
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    silent = listener.getsockname()[1]
    values = {"address": ray_session, "closed": closed, "silent": silent}
    try:
        with concurrent.futures.ThreadPoolExecutor(len(JOINING)) as pool:
            done = {
                name: pool.submit(_run_isolated, code.format(**values), {k: v.format(**values) for k, v in env.items()})
                for name, (code, env) in JOINING.items()
            }
            outs = {name: future.result() for name, future in done.items()}
    finally:
        listener.close()
    return {**outs, **values}


def test_joining_an_existing_cluster_by_address(joined, ray_session):
    out = joined["by address"]
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", ray_session]


def test_closed_port_fails_fast_naming_the_address(joined):
    out = joined["closed port"]
    assert out.returncode == 0, out.stderr[-2000:]
    seconds, address, *_ = out.stdout.split()
    assert address == f"127.0.0.1:{joined['closed']}"
    assert float(seconds) < 10
    assert "cannot reach" in out.stdout


def test_silent_listener_times_out_in_bounded_time(joined):
    """A port that accepts connections but never speaks Ray: bounded by RAYFLOW_CONNECT_TIMEOUT."""
    out = joined["silent listener"]
    assert out.returncode == 0, out.stderr[-2000:]
    seconds = float(out.stdout.split()[0])
    assert seconds < 15
    assert f"127.0.0.1:{joined['silent']}" in out.stdout


def test_ray_address_environment_variable_is_used(joined, ray_session):
    out = joined["RAY_ADDRESS"]
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", ray_session]


def test_unserialisable_return_value_fails_the_task_that_returned_it():
    """
    make_lock --(cannot be serialised)--> use_lock
    """

    @rf.task
    def make_lock():
        return threading.Lock()

    @rf.task
    def use_lock(lock) -> int:
        return 1

    @rf.flow
    def locks():
        return use_lock(make_lock())

    run = locks.run()
    made = run.task_states["make_lock"]
    assert made.type is StateType.FAILED
    assert "make_lock" in made.message and "cannot pickle" in made.message
    assert made.error.system is False
    assert run.task_states["use_lock"].type is StateType.TRIGGER_FAILED
