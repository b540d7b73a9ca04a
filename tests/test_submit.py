"""``rayflow submit``: runs as Ray Jobs on a ``ray start --head`` cluster with its job server.

One cluster for the module (token authentication on, as Ray 2.60 sets up ``ray start --head``
here; the job server on 127.0.0.1 only), stopped by killing its process group.  The flows
travel in a temp working dir (``--working-dir``); the head's RAYFLOW_HOME is the cluster's
own, so a run's history is found there, not in the submitting process's RAYFLOW_HOME.

The scenarios, mostly waiting on the job server, run at once (``scenarios``); each test checks its own.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import re
import secrets
import shlex
import signal
import subprocess
import sys
import textwrap

import pytest
import requests
from ray_cluster import RayCluster, clean_env, free_port
from submitted_approval import approved_run, test_a_submitted_runs_paused_task_is_approved_with_address  # noqa: F401
from waiting import wait_for
from wheels import tiny_wheel

from rayflow.store import RunStore

REPO = pathlib.Path(__file__).resolve().parent.parent
TOKEN = secrets.token_hex(32)
README_ADDRESS = "http://127.0.0.1:8265"  # the compose head's job server, in the README

FLOWS = textwrap.dedent('''
    import time
    import rayflow as rf

    @rf.task
    def double(x: int) -> int:
        return 2 * x

    @rf.task
    def add(a: int, b: int) -> int:
        return a + b


    @rf.flow
    def tiny(n: int = 1) -> int:
        return add(double(n), double(n + 1))


    @rf.task
    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds


    @rf.flow
    def sleepy(seconds: float = 60.0) -> float:
        return nap(seconds)


    @rf.task
    def where(i: int) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


    @rf.task
    def count(a: str, b: str) -> int:
        return len({a, b})


    @rf.flow
    def spread() -> int:  # a task on each node (by the nodes' resources): the worker node loads the working dir too
        return count(where.with_options(resources={"head": 1})(1), where.with_options(resources={"worker": 1})(2))


    @rf.task
    def marks() -> str:
        import os
        import rfmark  # installed on the cluster by --pip, for this run only

        return " ".join([rfmark.MARK, os.environ.get("RAYFLOW_TEST_MARK", "-"), os.environ.get("OTEL_SERVICE_NAME", "-")])


    @rf.flow
    def marked() -> str:
        return marks()
''')

SERVED = '''
[server]
max_concurrent = 1

[[flow]]
target = "flows.py:tiny"
interval = 2
'''


pytestmark = pytest.mark.timeout(480)  # a test waits for its scenario and those before it


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("cluster-rayflow-home")
    env = {
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, "RAYFLOW_HOME": str(home),
        # The job's `python` is the cluster's Python: this environment's, with rayflow.
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    }
    with RayCluster(num_cpus=2, env=env, dashboard=True, resources='{"head": 1}') as started:
        started.add_worker(num_cpus=1, resources='{"worker": 1}')
        started.rayflow_home = home
        yield started


@pytest.fixture(scope="module")
def flows_dir(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("submitted-code")
    (folder / "flows.py").write_text(FLOWS)
    (folder / "broken.py").write_text("import no_such_module_anywhere\n")
    (folder / "served.toml").write_text(SERVED)
    return folder


def rayflow(*args: str, home: pathlib.Path, timeout: float = 150, **env: str) -> subprocess.CompletedProcess:
    """``rayflow ARGS`` as a user on another machine: RAY_AUTH_TOKEN only (no RAY_AUTH_MODE), an empty HOME."""
    user_home = home / "user"
    user_home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "rayflow", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env=clean_env(user_home, RAYFLOW_HOME=str(home / "laptop-home"), **{"RAY_AUTH_TOKEN": TOKEN, **env}),
    )


def job_api(cluster: RayCluster, path: str = ""):
    answer = requests.get(f"{cluster.job_address}/api/jobs/{path}", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
    answer.raise_for_status()
    return answer.json()


def jobs_with_id(cluster: RayCluster, submission_id: str) -> int:
    return sum(1 for job in job_api(cluster) if job.get("submission_id") == submission_id)


def jobs_with_id_prefix(cluster: RayCluster, prefix: str, but: str = "\0") -> int:  # but: leave out another scenario's
    return sum(1 for job in job_api(cluster) if (job.get("submission_id") or "").startswith(prefix) and but not in job["entrypoint"])


def job_status(cluster: RayCluster, submission_id: str) -> str:
    return job_api(cluster, submission_id)["status"]


def history_state(cluster: RayCluster, run_id: str) -> str | None:
    """The run's state in the cluster's run history, read here (fast enough to catch a short run)."""
    run = RunStore(cluster.rayflow_home).run(run_id)
    return None if run is None else run["state"]


def cluster_history(cluster: RayCluster, run_id: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    """``rayflow show RUN_ID`` over the cluster's own RAYFLOW_HOME (the head node's)."""
    return subprocess.run(
        [sys.executable, "-m", "rayflow", "show", run_id, "--json"], capture_output=True, text=True, timeout=60,
        cwd=REPO, env=clean_env(tmp_path, RAYFLOW_HOME=str(cluster.rayflow_home)),
    )


def refused(cluster, flows_dir, tmp_path: pathlib.Path) -> dict[str, subprocess.CompletedProcess]:
    """The `rayflow submit`/`cancel` commands of the tests that check a one-line refusal or a
    failed load, run at once (each is a process of seconds, most of them waiting on the job server
    or on a port): by name, each with a home of its own; ``big-code`` is the oversized working dir."""
    address = cluster.job_address
    big = tmp_path / "big-code"
    big.mkdir()
    (big / "flows.py").write_text(FLOWS)
    with open(big / "data.bin", "wb") as f:  # random: it zips to as much, past the job server's 100 MiB
        for _ in range(101):
            f.write(os.urandom(1024**2))
    nowhere = f"http://127.0.0.1:{free_port()}"
    calls = {
        "bad params": (("submit", "flows.py:tiny", "--address", address, "--working-dir", str(flows_dir),
                        "-p", "n=many", "--run-id", "bad-params-1"), {}),
        "missing target": (("submit", "nowhere.py:tiny", "--address", address, "--working-dir", str(flows_dir),
                            "--run-id", "bad-params-2"), {}),
        "broken": (("submit", "broken.py:flow", "--address", address, "--working-dir", str(flows_dir),
                    "--run-id", "broken-1", "--follow"), {}),
        "missing token": (("submit", "flows.py:tiny", "--address", address), {"RAY_AUTH_TOKEN": ""}),
        "wrong token": (("cancel", "x", "--address", address), {"RAY_AUTH_TOKEN": "0" * 64}),
        "no job server": (("submit", "flows.py:tiny", "--address", nowhere),
                          {"RAYFLOW_CONNECT_TIMEOUT": "2"}),
        "big working dir": (("submit", "flows.py:tiny", "--address", address, "--working-dir", str(big),
                             "--run-id", "big-1"), {}),
    }
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        done = {}
        for i, (name, (argv, kw)) in enumerate(calls.items()):
            (tmp_path / f"user-{i}").mkdir()
            done[name] = pool.submit(rayflow, *argv, home=tmp_path / f"user-{i}", **kw)
        outs = {name: future.result() for name, future in done.items()}
    return {**outs, "big-code": big, "nowhere": nowhere}


@pytest.fixture(scope="module")
def scenarios(cluster, flows_dir, tmp_path_factory):
    """Every scenario of SCENARIOS, each in a thread, started at once or once those it waits for are
    done: by name, a future whose result raises what the scenario's own checks raised."""
    started, pool = {}, concurrent.futures.ThreadPoolExecutor(len(SCENARIOS))

    def start_after(before: list[concurrent.futures.Future], scenario, home: pathlib.Path):
        concurrent.futures.wait(before)
        return scenario(cluster, flows_dir, home)

    for name, (scenario, after) in SCENARIOS.items():
        started[name] = pool.submit(start_after, [started[a] for a in after], scenario, tmp_path_factory.mktemp(name))
    yield started
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def refusals(scenarios) -> dict[str, subprocess.CompletedProcess]:
    return scenarios["refusals"].result()


def readme_walkthrough() -> list[list[str]]:
    """The `rayflow` commands of the README's compose walk-through, as written there."""
    text = (REPO / "README.md").read_text()
    block = text[text.index("<!-- walkthrough:start -->"):text.index("<!-- walkthrough:end -->")]
    return [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("rayflow ")]


def readme_walkthrough_run(cluster, flows_dir, tmp_path):
    """Submit a flow with parameters and a working dir, follow it to its result, see it in the
    cluster's history and its logs: the README's commands, with the test cluster's address."""
    commands = readme_walkthrough()
    assert [c[0] for c in commands] == ["submit", "show", "runs", "logs"]
    commands = [[cluster.job_address if a == README_ADDRESS else a for a in argv] for argv in commands]
    # The submit follows the run to its end; the three reads after it run at once (each is a
    # query job of seconds on the cluster, or a read of the job's log), as three terminals would.
    outs = [rayflow(*commands[0], home=tmp_path)]
    assert outs[0].returncode == 0, (commands[0], outs[0].stdout[-3000:], outs[0].stderr)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        missing_future = pool.submit(rayflow, "show", "no-such-run", "--address", cluster.job_address, home=tmp_path)
        outs += list(pool.map(lambda argv: rayflow(*argv, home=tmp_path), commands[1:]))
        missing = missing_future.result()
    for argv, out in zip(commands[1:], outs[1:]):
        assert out.returncode == 0, (argv, out.stdout[-3000:], out.stderr)
    submitted, shown, listed, logs = (out.stdout for out in outs)
    assert submitted.splitlines()[0] == "daily-1" and "state: SUCCESS" in submitted
    # Each task's state changes, as they happened on the cluster (`rayflow run --log-states` there).
    states = [line.split()[1:3] for line in submitted.splitlines() if re.match(r"\d\d:\d\d:\d\d\.\d{3} ", line)]
    assert states.index(["SUCCESS", "fetch"]) < states.index(["RUNNING", "score"]) < states.index(["SUCCESS", "total"])
    # The history is the cluster's (the head's RAYFLOW_HOME), read there by show and runs.
    assert "state: SUCCESS" in shown and "score" in shown
    assert any(line.split()[:1] == ["daily-1"] and "SUCCESS" in line for line in listed.splitlines())
    assert "state: SUCCESS" in logs  # the job's output: `rayflow run`'s on the cluster
    assert not (tmp_path / "laptop-home" / "history.db").exists()
    assert missing.returncode == 1 and "no run 'no-such-run'" in missing.stderr
    assert jobs_with_id_prefix(cluster, "rayflow-query-", but=" approve ") == 0  # each query job is deleted once read


def test_the_readme_walkthrough_runs_as_written(scenarios):
    scenarios["walkthrough"].result()  # readme_walkthrough_run, run at once with the others


def pip_run(cluster, flows_dir, tmp_path):
    wheel = tiny_wheel(tmp_path)
    out = rayflow("submit", "flows.py:marked", "--address", cluster.job_address, "--working-dir", str(flows_dir),
                  "--pip", str(wheel), "--run-id", "marked-1", "--follow", home=tmp_path,
                  RAYFLOW_TEST_MARK="from-laptop", OTEL_SERVICE_NAME="laptop-service")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    assert 'result: "wheel-ok from-laptop laptop-service"' in out.stdout


def test_pip_packages_and_this_machines_settings_travel_with_the_run(scenarios):
    scenarios["pip"].result()  # pip_run, run at once with the others


def test_bad_parameters_are_refused_here_before_anything_is_submitted(cluster, refusals):
    out = refusals["bad params"]
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "invalid parameters for flow 'tiny': n: Input should be a valid integer" in out.stderr
    missing = refusals["missing target"]
    assert missing.returncode == 2 and "no such file in the working dir" in missing.stderr
    assert jobs_with_id(cluster, "rayflow-bad-params-1") == 0 and jobs_with_id(cluster, "rayflow-bad-params-2") == 0


def served_schedules(cluster, flows_dir, tmp_path):
    """`rayflow serve` as a job on the head: its schedules fire with no laptop involved, and its
    UI serves the head's history (scheduled runs and submitted ones alike)."""
    wait_for(lambda: history_state(cluster, "daily-1") in ("SUCCESS", "FAILED"), timeout=150, what="daily-1")  # SCENARIOS
    ui_port = free_port()
    out = rayflow("submit", "--serve", "served.toml", "--address", cluster.job_address, "--working-dir", str(flows_dir),
                  "--ui", "--ui-port", str(ui_port), home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "serve-served"

    def scheduled_runs() -> list[dict]:
        return [r for r in RunStore(cluster.rayflow_home).runs(flow="tiny", limit=50) if r.get("schedule_id")]

    try:
        wait_for(lambda: any(r["state"] == "SUCCESS" for r in scheduled_runs()), timeout=120,
                 what="a scheduled run fired by the server on the cluster")
        recorded = {r["run_id"] for r in RunStore(cluster.rayflow_home).runs(limit=20)}
        shown = {r["run_id"] for r in requests.get(f"http://127.0.0.1:{ui_port}/api/runs", timeout=10).json()}
        assert recorded <= shown  # every run the head recorded: scheduled ones and submitted ones
    finally:
        stopped = rayflow("cancel", "serve-served", "--address", cluster.job_address, home=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    # Ray's job supervisor says STOPPED only once the job's entrypoint and every process under it
    # have exited (SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S): no server is left to fire.
    # (Was: a 3 s sleep past the 2 s interval, to see no further fire.)
    assert job_status(cluster, "rayflow-serve-served") in ("STOPPED", "SUCCEEDED")
    fired = len(scheduled_runs())
    # A stopped server can be started again (its ended job is replaced), and stopped again.
    again = rayflow("submit", "--serve", "served.toml", "--address", cluster.job_address, "--working-dir", str(flows_dir),
                    home=tmp_path)
    assert again.returncode == 0 and "submitted server serve-served" in again.stderr, again.stderr
    wait_for(lambda: len(scheduled_runs()) > fired, timeout=60, what="the restarted server to fire")
    assert rayflow("cancel", "serve-served", "--address", cluster.job_address, home=tmp_path).returncode == 0


def test_submit_serve_fires_schedules_on_the_cluster_until_cancelled(scenarios):
    scenarios["serve"].result()  # served_schedules, run at once with the others


def test_this_machines_settings_travel_but_not_its_home_timeout_or_loopback_endpoint():
    from rayflow.runtime.driver.jobs import forwarded_env

    env = {
        "OTEL_SERVICE_NAME": "svc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector.internal:4318/v1/traces",
        "RAYFLOW_RESOURCE_WAIT": "5", "RAYFLOW_HOME": "/laptop", "RAYFLOW_CONNECT_TIMEOUT": "1", "PATH": "/bin",
    }
    assert forwarded_env(env) == {
        "OTEL_SERVICE_NAME": "svc", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector.internal:4318/v1/traces",
        "RAYFLOW_RESOURCE_WAIT": "5",
    }


def cancelled_run(cluster, flows_dir, tmp_path):
    out = rayflow("submit", "flows.py:sleepy", "--address", cluster.job_address, "--working-dir", str(flows_dir),
                  "-p", "seconds=120", "--run-id", "long-1", home=tmp_path)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: history_state(cluster, "long-1") == "RUNNING", timeout=90,
             what="the submitted run to be running on the cluster")
    cancelled = rayflow("cancel", "long-1", "--address", cluster.job_address, home=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == "run long-1: job STOPPED"
    assert job_status(cluster, "rayflow-long-1") == "STOPPED"
    # Its driver cancelled the run on SIGTERM: the cluster's history says so.
    wait_for(lambda: history_state(cluster, "long-1") == "CANCELLED", timeout=30,
             what="the run to be recorded CANCELLED")


def test_cancel_stops_a_long_submitted_run(scenarios):
    scenarios["cancel"].result()  # cancelled_run, run at once with the others


def orphaned_run(cluster, flows_dir, tmp_path):
    args = ("submit", "flows.py:sleepy", "--address", cluster.job_address, "--working-dir", str(flows_dir),
            "-p", "seconds=6", "--run-id", "orphan-1", "--follow")  # long enough to be killed mid-run
    follower = subprocess.Popen(
        [sys.executable, "-m", "rayflow", *args],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env=clean_env(tmp_path, RAYFLOW_HOME=str(tmp_path / "laptop-home"), RAY_AUTH_TOKEN=TOKEN),
    )
    try:
        wait_for(lambda: history_state(cluster, "orphan-1") == "RUNNING", timeout=90,
                 what="the submitted run to be running on the cluster")
        assert follower.poll() is None  # still following: killed mid-run below
    finally:
        os.killpg(follower.pid, signal.SIGKILL)
        follower.wait(10)
    assert job_status(cluster, "rayflow-orphan-1") == "RUNNING"
    # Submitting the same run id again submits nothing: it follows the first run to its end.
    again = rayflow(*args, home=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "submitted before" in again.stderr and "not submitted again" in again.stderr
    assert "result: 6.0" in again.stdout
    assert job_status(cluster, "rayflow-orphan-1") == "SUCCEEDED" and jobs_with_id(cluster, "rayflow-orphan-1") == 1
    assert '"SUCCESS"' in cluster_history(cluster, "orphan-1", tmp_path).stdout


def test_the_run_goes_on_when_the_submitting_process_is_killed_and_a_second_submit_is_the_same_run(scenarios):
    scenarios["orphan"].result()  # orphaned_run, run at once with the others


def test_a_flow_that_fails_to_load_on_the_cluster_exits_2_with_its_error(refusals):
    out = refusals["broken"]
    assert out.returncode == 2, out.stderr
    assert "no_such_module_anywhere" in out.stdout  # the job's own error line
    assert "exit code 2" in out.stderr.splitlines()[-1]


def test_a_missing_or_wrong_token_is_one_line_exit_3(refusals):
    missing = refusals["missing token"]
    assert missing.returncode == 3
    assert missing.stderr.count("\n") == 1 and "no token was found" in missing.stderr
    wrong = refusals["wrong token"]
    assert wrong.returncode == 3
    assert wrong.stderr.count("\n") == 1 and "rejected the token from RAY_AUTH_TOKEN" in wrong.stderr


def test_no_job_server_at_the_address_is_one_line_exit_3(refusals):
    out = refusals["no job server"]
    assert out.returncode == 3
    assert out.stderr.count("\n") == 1
    assert f"no Ray job server answered at {refusals['nowhere']} within 2s" in out.stderr


def test_a_working_dir_over_the_upload_limit_names_the_limit_and_its_size(cluster, refusals):
    out, code = refusals["big working dir"], refusals["big-code"]
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert f"the working dir {code} (101.0 MiB before zipping) is over the job server's upload limit (100.0 MiB zipped)" in out.stderr
    assert jobs_with_id(cluster, "rayflow-big-1") == 0


def submitted_spread(cluster, flows_dir, tmp_path):
    out = rayflow("submit", "flows.py:spread", "--address", cluster.job_address, "--working-dir", str(flows_dir),
                  "--run-id", "spread-1", "--follow", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "result: 2" in out.stdout  # the head's and the worker node's tasks ran on two nodes


def test_a_submitted_run_uses_the_worker_node_too(scenarios):
    scenarios["spread"].result()  # submitted_spread, run at once with the others


# The scenarios of ``scenarios``: name -> (scenario, the scenarios it starts after).  The approve
# scenario (the long pole) starts at once with the spread and the refusals (processes of seconds); the
# rest once the refusals are done (not too many processes at once for 2 cores to answer in time).  The
# server waits for daily-1 to end (it needs the CPUs), then runs beside the walkthrough's reads: too few
# of its runs (one per 2 s at most) come in those seconds to push daily-1 off `runs`'s page of 20.
SCENARIOS = {
    "spread": (submitted_spread, ()),
    "refusals": (refused, ()),
    "approve": (approved_run, ()),
    "walkthrough": (readme_walkthrough_run, ("refusals",)),
    "pip": (pip_run, ("refusals",)),
    "cancel": (cancelled_run, ("refusals",)),
    "orphan": (orphaned_run, ("refusals",)),
    "serve": (served_schedules, ("refusals",)),
}
