"""``rayflow submit`` (and the ``--address`` reads, which run as jobs) to a head started seconds
ago: its job server answers, but a submit gets Ray's 500 "No available agent to submit job"
until the head's job agent is up.  The command waits for it (RAYFLOW_CONNECT_TIMEOUT), and
when it never comes ends with one line and exit 3 (no cluster), not exit 2 (bad input).

The job server here is a real HTTP server on 127.0.0.1 that answers as Ray 2.60's does while
its agent is not up (the answer the multi-host test bed met, see test_netbed.py): a few
seconds per test, no Ray.
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time

import pytest
from cli_runner import REPO
from ray_cluster import clean_env

NO_AGENT = "No available agent to submit job, please try again later."


class FakeJobServer(http.server.ThreadingHTTPServer):
    """Refuses the first ``refusals`` submits as a head without its job agent does, then takes them."""

    def __init__(self, refusals: int):
        super().__init__(("127.0.0.1", 0), Handler)
        self.refusals, self.posts = refusals, []

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: object) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/api/version":
            self._answer(200, {"version": "4", "ray_version": "2.60.0", "ray_commit": "x", "session_name": "s"})
        else:  # no job by that id yet
            self._answer(404, "Job does not exist")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.posts.append(time.monotonic())
        if len(self.server.posts) <= self.server.refusals:
            self._answer(500, NO_AGENT)
        else:
            self._answer(200, {"submission_id": body["submission_id"], "job_id": None})


def rayflow(tmp_path, refusals: int, args: list[str], wait: str) -> tuple:
    """``rayflow ARGS --address`` a fake job server refusing ``refusals`` submits: (process, server, seconds)."""
    import subprocess

    server = FakeJobServer(refusals)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started = time.monotonic()
    try:
        out = subprocess.run([sys.executable, "-m", "rayflow", *args, "--address", server.address], capture_output=True,
                             text=True, timeout=60, cwd=REPO,
                             env=clean_env(tmp_path, RAYFLOW_CONNECT_TIMEOUT=wait, RAYFLOW_HOME=str(tmp_path)))
    finally:
        server.shutdown()
        server.server_close()
    return out, server, time.monotonic() - started


CALLS = {  # name: (refusals, argv, RAYFLOW_CONNECT_TIMEOUT)
    "late agent": (3, ["submit", "flows.py:tiny", "--run-id", "early-1"], "20"),
    "no agent, submit": (10**6, ["submit", "flows.py:tiny", "--run-id", "never-1"], "1.5"),
    "no agent, runs": (10**6, ["runs"], "1.5"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict:
    """Each of CALLS, run at once (each is seconds of a process starting, most of it importing)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(len(CALLS)) as pool:
        futures = {name: pool.submit(rayflow, tmp_path_factory.mktemp("agent-wait"), *call) for name, call in CALLS.items()}
        return {name: future.result() for name, future in futures.items()}


def test_a_submit_waits_for_the_heads_job_agent(outcomes):
    out, server, _ = outcomes["late agent"]
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "early-1" and "submitted run early-1 as job rayflow-early-1" in out.stderr
    assert len(server.posts) == 4  # three refused while the agent was not up, the fourth taken


@pytest.mark.parametrize("name", ["no agent, submit", "no agent, runs"])
def test_no_job_agent_in_time_is_one_line_and_exit_3(outcomes, name):
    out, server, took = outcomes[name]
    assert out.returncode == 3, out.stderr  # no cluster: not the user's bad input (2)
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert "had no job agent to run the job after 1.5s" in out.stderr and server.address in out.stderr
    assert len(server.posts) >= 2 and took < 15  # retried, and bounded
