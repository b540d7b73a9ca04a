"""``rayflow submit``: runs as Ray Jobs on a ``ray start --head`` cluster with its job server.

One cluster for the module (token authentication on, as Ray 2.60 sets up ``ray start --head``
here; the job server on 127.0.0.1 only), stopped by killing its process group.  The flows
travel in a temp working dir (``--working-dir``); the head's RAYFLOW_HOME is the cluster's
own, so a run's history is found there, not in the submitting process's RAYFLOW_HOME.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import signal
import subprocess
import sys
import textwrap

import pytest
import requests
from ray_cluster import RayCluster, clean_env, free_port
from waiting import wait_for

from rayflow.store import RunStore

REPO = pathlib.Path(__file__).resolve().parent.parent
TOKEN = secrets.token_hex(32)

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

        time.sleep(2)  # the three are running at once: 3 CPUs, 2 on the head, 1 on the worker node
        return ray.get_runtime_context().get_node_id()


    @rf.task
    def count(a: str, b: str, c: str) -> int:
        return len({a, b, c})


    @rf.flow
    def spread() -> int:
        return count(where(1), where(2), where(3))
''')

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("cluster-rayflow-home")
    env = {
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, "RAYFLOW_HOME": str(home),
        # The job's `python` is the cluster's Python: this environment's, with rayflow.
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    }
    with RayCluster(num_cpus=2, env=env, dashboard=True) as started:
        started.add_worker(num_cpus=1)
        started.rayflow_home = home
        yield started


@pytest.fixture(scope="module")
def flows_dir(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("submitted-code")
    (folder / "flows.py").write_text(FLOWS)
    (folder / "broken.py").write_text("import no_such_module_anywhere\n")
    return folder


def rayflow(*args: str, home: pathlib.Path, timeout: float = 150, **env: str) -> subprocess.CompletedProcess:
    """``rayflow ARGS`` as a user on another machine: RAY_AUTH_TOKEN only (no RAY_AUTH_MODE), an empty HOME."""
    user_home = home / "user"
    user_home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "rayflow", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env=clean_env(user_home, RAYFLOW_HOME=str(home / "laptop-home"), **{"RAY_AUTH_TOKEN": TOKEN, **env}),
    )


def jobs_with_id(cluster: RayCluster, submission_id: str) -> int:
    answer = requests.get(f"{cluster.job_address}/api/jobs/", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
    answer.raise_for_status()
    return sum(1 for job in answer.json() if job.get("submission_id") == submission_id)


def job_status(cluster: RayCluster, submission_id: str) -> str:
    answer = requests.get(f"{cluster.job_address}/api/jobs/{submission_id}",
                          headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
    answer.raise_for_status()
    return answer.json()["status"]


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


def test_submit_follows_a_run_with_parameters_to_its_result(cluster, flows_dir, tmp_path):
    out = rayflow("submit", "flows.py:tiny", "--address", cluster.job_address, "--working-dir", str(flows_dir),
                  "--param", "n=3", "--run-id", "follow-1", "--follow", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "result: 14" in out.stdout
    assert out.stdout.splitlines()[0] == "follow-1"
    # The run's history is where the cluster keeps it; its logs come from the job.
    shown = cluster_history(cluster, "follow-1", tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert '"SUCCESS"' in shown.stdout
    logs = rayflow("logs", "follow-1", "--address", cluster.job_address, home=tmp_path)
    assert logs.returncode == 0, logs.stderr
    assert "result: 14" in logs.stdout
    assert not (tmp_path / "laptop-home" / "history.db").exists()


def test_one_run_id_submitted_twice_is_one_run(cluster, flows_dir, tmp_path):
    args = ("submit", "flows.py:tiny", "--address", cluster.job_address, "--working-dir", str(flows_dir),
            "-p", "n=1", "--run-id", "twice-1")
    first = rayflow(*args, home=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "twice-1"
    again = rayflow(*args, "--follow", home=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "submitted before" in again.stderr and "not submitted again" in again.stderr
    assert "result: 6" in again.stdout  # it followed the first submission to its end
    assert jobs_with_id(cluster, "rayflow-twice-1") == 1


def test_cancel_stops_a_long_submitted_run(cluster, flows_dir, tmp_path):
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


def test_the_run_goes_on_when_the_submitting_process_is_killed(cluster, flows_dir, tmp_path):
    follower = subprocess.Popen(
        [sys.executable, "-m", "rayflow", "submit", "flows.py:sleepy", "--address", cluster.job_address,
         "--working-dir", str(flows_dir), "-p", "seconds=10", "--run-id", "orphan-1", "--follow"],
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
    wait_for(lambda: job_status(cluster, "rayflow-orphan-1") == "SUCCEEDED", timeout=90,
             what="the run to complete on the cluster")
    assert '"SUCCESS"' in cluster_history(cluster, "orphan-1", tmp_path).stdout


def test_a_flow_that_fails_to_load_on_the_cluster_exits_2_with_its_error(cluster, flows_dir, tmp_path):
    out = rayflow("submit", "broken.py:flow", "--address", cluster.job_address, "--working-dir", str(flows_dir),
                  "--run-id", "broken-1", "--follow", home=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "no_such_module_anywhere" in out.stdout  # the job's own error line
    assert "exit code 2" in out.stderr.splitlines()[-1]


def test_a_missing_or_wrong_token_is_one_line_exit_3(cluster, tmp_path):
    missing = rayflow("submit", "flows.py:tiny", "--address", cluster.job_address, home=tmp_path, RAY_AUTH_TOKEN="")
    assert missing.returncode == 3
    assert missing.stderr.count("\n") == 1 and "no token was found" in missing.stderr
    wrong = rayflow("cancel", "x", "--address", cluster.job_address, home=tmp_path, RAY_AUTH_TOKEN="0" * 64)
    assert wrong.returncode == 3
    assert wrong.stderr.count("\n") == 1 and "rejected the token from RAY_AUTH_TOKEN" in wrong.stderr


def test_no_job_server_at_the_address_is_one_line_exit_3(tmp_path):
    address = f"http://127.0.0.1:{free_port()}"
    out = rayflow("submit", "flows.py:tiny", "--address", address, home=tmp_path, timeout=60, RAYFLOW_CONNECT_TIMEOUT="2")
    assert out.returncode == 3
    assert out.stderr.count("\n") == 1
    assert f"no Ray job server answered at {address} within 2s" in out.stderr



def test_a_working_dir_over_the_upload_limit_names_the_limit_and_its_size(cluster, tmp_path):
    code = tmp_path / "big-code"
    code.mkdir()
    (code / "flows.py").write_text(FLOWS)
    with open(code / "data.bin", "wb") as f:  # random: it zips to as much, past the job server's 100 MiB
        for _ in range(101):
            f.write(os.urandom(1024**2))
    out = rayflow("submit", "flows.py:tiny", "--address", cluster.job_address, "--working-dir", str(code),
                  "--run-id", "big-1", home=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert f"the working dir {code} (101.0 MiB before zipping) is over the job server's upload limit (100.0 MiB zipped)" in out.stderr
    assert jobs_with_id(cluster, "rayflow-big-1") == 0


def test_a_submitted_run_uses_the_worker_node_too(cluster, flows_dir, tmp_path):
    out = rayflow("submit", "flows.py:spread", "--address", cluster.job_address, "--working-dir", str(flows_dir),
                  "--run-id", "spread-1", "--follow", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "result: 2" in out.stdout  # the head's and the worker node's tasks
