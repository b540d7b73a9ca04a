"""From submitting a run to its first task running, on a local `ray start` cluster with its
job server: `rayflow submit` vs a hand-written Ray Job (same cluster, same run).

    python benchmarks/submit_latency.py [--repeat 3]

Starts a head (2 CPUs, token authentication on, job server on loopback) with the test
suite's RayCluster, and for each repetition:

- rayflow: `rayflow submit flows.py:first --working-dir DIR` (the CLI process, as a user
  runs it), whose one task writes the time it started;
- hand-written: Ray's `JobSubmissionClient.submit_job` (made before the clock starts) of
  `python first.py` with the same working dir, a script whose one `@ray.remote` task writes the time it started.

Both are timed from just before the submit to the time the task wrote (the job's end is not
waited for).  Prints a table, then one JSON object on the last line; min of the repetitions.
``--baseline DIR``: another rayflow's source tree (``git archive REV rayflow | tar -x -C DIR``),
measured the same way, each repetition alternately with this one's, on a cluster of its own
whose processes and CLI import rayflow from DIR (PYTHONPATH): before/after from one machine state.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import secrets
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from ray_cluster import RayCluster, clean_env  # noqa: E402 - the test suite's cluster helper

FLOW = '''
import os, time
import rayflow as rf


@rf.task
def stamp(path: str) -> float:
    now = time.time()
    with open(path, "w") as f:
        f.write(repr(now))
    return now


@rf.flow
def first(path: str) -> float:
    return stamp(path)
'''

SCRIPT = '''
import sys, time
import ray


@ray.remote
def stamp(path):
    now = time.time()
    with open(path, "w") as f:
        f.write(repr(now))
    return now


ray.init()
ray.get(stamp.remote(sys.argv[1]))
'''


def wait_stamp(path: pathlib.Path, timeout: float = 120) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text():
            return float(path.read_text())
        time.sleep(0.05)
    raise TimeoutError(f"no task started within {timeout}s ({path})")


def wait_ended(client, sid: str, timeout: float = 120) -> None:
    """The job has ended (so the next repetition starts on an idle cluster)."""
    from rayflow.runtime.driver import jobs

    deadline = time.time() + timeout
    while jobs.job_status(client, sid) not in jobs.TERMINAL:
        if time.time() > deadline:
            raise TimeoutError(f"job {sid} did not end: {jobs.logs(client, sid)[-2000:]}")
        time.sleep(0.2)


class Bench:
    """One cluster whose processes (and the CLI) import rayflow from ``tree``, and the times of
    each repetition.  ``token``: the clusters' one token (Ray's client keeps the first it read)."""

    def __init__(self, tree: pathlib.Path, token: str, stack: contextlib.ExitStack):
        from rayflow.runtime.driver import jobs

        self.code = code = pathlib.Path(tempfile.mkdtemp(prefix="submit-bench-"))
        (code / "flows.py").write_text(FLOW)
        (code / "first.py").write_text(SCRIPT)
        env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAYFLOW_HOME": str(code / "cluster-home"),
               "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""), "PYTHONPATH": str(tree)}
        self.cluster = stack.enter_context(RayCluster(num_cpus=2, env=env, dashboard=True))
        os.environ["RAY_AUTH_TOKEN"] = token
        self.client = jobs.connect(self.cluster.job_address)
        from ray.job_submission import JobSubmissionClient  # the hand-written side submits as a Ray user does

        self.ray_client = JobSubmissionClient(self.cluster.job_address, headers=self.client._headers)
        self.cli_env = clean_env(code, RAY_AUTH_TOKEN=token, RAYFLOW_HOME=str(code / "laptop-home"), PYTHONPATH=str(tree))
        self.cli_env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's Python keeps its bytecode caches
        self.times: dict[str, list[float]] = {"rayflow": [], "ray": [], "cli": [], "submit": []}

    def once(self, i: int) -> None:
        """rayflow submit, then the hand-written job: each to its first task, then to its job's end."""
        from rayflow.runtime.driver import jobs

        code, client = self.code, self.client
        path = code / f"rayflow-{i}.stamp"
        started = time.time()
        out = subprocess.run(
            [sys.executable, "-m", "rayflow", "submit", "flows.py:first", "--address", self.cluster.job_address,
             "--working-dir", str(code), "-p", f"path={path}", "--run-id", f"bench-{i}"],
            capture_output=True, text=True, cwd=REPO, env=self.cli_env,
        )
        assert out.returncode == 0, out.stderr
        self.times["cli"].append(time.time() - started)
        self.times["rayflow"].append(wait_stamp(path) - started)
        wait_ended(client, jobs.submission_id(f"bench-{i}"))

        path = code / f"ray-{i}.stamp"
        started = time.time()
        sid = self.ray_client.submit_job(entrypoint=f"python first.py {path}", runtime_env={"working_dir": str(code)})
        self.times["submit"].append(time.time() - started)
        self.times["ray"].append(wait_stamp(path) - started)
        wait_ended(client, sid)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", help="a source tree of another rayflow (git archive REV rayflow | tar -x -C DIR), "
                                           "measured alternately with this one, on a cluster of its own")
    args = parser.parse_args()
    trees = {"now": REPO, **({"baseline": pathlib.Path(args.baseline).resolve()} if args.baseline else {})}
    token = secrets.token_hex(32)
    with contextlib.ExitStack() as stack:  # both clusters up at once: the repetitions alternate
        benches = {name: Bench(tree, token, stack) for name, tree in trees.items()}
        for i in range(args.repeat):
            for bench in benches.values():
                bench.once(i)
    found = {name: bench.times for name, bench in benches.items()}
    print(f"{'submit -> first task running':<36}{'min s':>8}  {'all s':<40}{'submit returned, min s':>24}")
    for name, runs in found.items():
        for label, times, returned in ((f"rayflow submit ({name})", runs["rayflow"], runs["cli"]),
                                       (f"hand-written Ray Job ({name})", runs["ray"], runs["submit"])):
            print(f"{label:<36}{min(times):>8.2f}  {'  '.join(f'{x:.2f}' for x in times):<40}{min(returned):>24.2f}")
    summary = {
        name: {"rayflow_s": round(min(runs["rayflow"]), 3), "ray_job_s": round(min(runs["ray"]), 3),
               "ratio": round(min(runs["rayflow"]) / min(runs["ray"]), 2),
               "rayflow_cli_returned_s": round(min(runs["cli"]), 3), "ray_submit_returned_s": round(min(runs["submit"]), 3)}
        for name, runs in found.items()
    }
    print(json.dumps({"benchmark": "submit_latency", "repeat": args.repeat, **summary["now"],
                      **({"baseline": summary["baseline"]} if args.baseline else {})}))


if __name__ == "__main__":
    main()
