"""A ``ray start --head`` cluster of its own, for tests that join a cluster by address.

``RayCluster`` starts the head in its own process group (``--block``, so the
group holds every Ray process the head spawned) with its own temp dir and a
free port, waits until the GCS answers, and stops it by killing that process
group: never ``ray stop``, which would stop every Ray on the machine, other
engineers' test sessions included.

    with RayCluster(num_cpus=1, env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}) as cluster:
        run_cli("run", ..., "--address", cluster.address)
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

RAY = pathlib.Path(sys.executable).with_name("ray")
# Variables that change which Ray a process joins or how it authenticates: a cluster's
# own environment starts without them unless ``env`` sets them.
RAY_CONNECTION_VARS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(home: str | os.PathLike[str], **extra: str) -> dict[str, str]:
    """This environment without Ray's connection variables, ``HOME`` at ``home`` (so no
    ``~/.ray/auth_token`` is found unless one is put there), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in RAY_CONNECTION_VARS}
    env["HOME"] = str(home)
    env.update(extra)
    return env


class RayCluster:
    """One head node on 127.0.0.1; ``address`` is ``127.0.0.1:<port>`` once started."""

    def __init__(self, *, num_cpus: int = 1, env: Mapping[str, str] | None = None, resources: str | None = None,
                 start_timeout: float = 90.0, dashboard: bool = False):
        self.num_cpus = num_cpus
        self.extra_env = dict(env or {})
        self.resources = resources  # a JSON string for --resources
        self.start_timeout = start_timeout
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="rayflow-cluster-"))
        self.home = self.dir / "home"  # the head's HOME: a token file there is the cluster's own
        self.home.mkdir()
        self.process: subprocess.Popen | None = None
        self.workers: list[tuple[subprocess.Popen, Any, str]] = []  # (process, log, temp dir) per worker node
        # With ``dashboard``: the job server too, on loopback only; ``job_address`` is its URL.
        self.dashboard = dashboard
        self.dashboard_port = free_port() if dashboard else None
        self.job_address = f"http://127.0.0.1:{self.dashboard_port}" if dashboard else None

    def start(self) -> RayCluster:
        # A short temp dir: Ray's socket paths must fit in 107 bytes.
        temp_dir = tempfile.mkdtemp(prefix="rf-ray-", dir="/tmp")
        self._temp_dir = temp_dir
        command = [
            str(RAY), "start", "--head", "--block", f"--port={self.port}", "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.num_cpus}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
        ]
        if self.dashboard:
            command += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                        f"--dashboard-agent-listen-port={free_port()}"]
        else:
            command.append("--include-dashboard=false")
        if self.resources is not None:
            command.append(f"--resources={self.resources}")
        self.log = open(self.dir / "ray-start.log", "wb")
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env=clean_env(self.home, **self.extra_env),
        )
        self._wait_until_up()
        return self

    def _wait_until_up(self) -> None:
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            if (code := self.process.poll()) is not None:
                self.stop()  # (forgets the process)
                raise RuntimeError(f"ray start exited {code}: {self.output()[-2000:]}")
            if b"Ray runtime started" in (self.dir / "ray-start.log").read_bytes() and self._dashboard_up():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ray start did not come up in {self.start_timeout:.0f}s: {self.output()[-2000:]}")

    def add_worker(self, num_cpus: int = 1, start_timeout: float = 60.0, resources: str | None = None) -> subprocess.Popen:
        """A worker node joined with ``ray start --address --block``, in its own process group
        (stopped with the head by ``stop``); returns once the node has started."""
        temp_dir = tempfile.mkdtemp(prefix="rf-ray-w-", dir="/tmp")
        log_path = self.dir / f"ray-worker-{len(self.workers)}.log"
        log = open(log_path, "wb")
        command = [
            str(RAY), "start", "--block", f"--address={self.address}", "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}", f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats", *([f"--resources={resources}"] if resources is not None else []),
        ]
        worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                  env=clean_env(self.home, **self.extra_env))
        self.workers.append((worker, log, temp_dir))
        deadline = time.time() + start_timeout
        while b"Ray runtime started" not in log_path.read_bytes():
            if worker.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"ray start (worker) did not come up: {log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        return worker

    def _dashboard_up(self) -> bool:
        if not self.dashboard:
            return True
        try:
            with socket.create_connection(("127.0.0.1", self.dashboard_port), timeout=1):
                return True
        except OSError:
            return False

    def output(self) -> str:
        return (self.dir / "ray-start.log").read_text(errors="replace")

    def stop(self) -> None:
        """Kill the head's and the worker nodes' process groups: every Ray process they started
        (SIGKILL at once: a test cluster keeps nothing worth a graceful stop, which takes ~10 s)."""
        for worker, log, temp_dir in self.workers:
            kill_group(worker)
            log.close()
            _remove_later(temp_dir)
        self.workers = []
        if self.process is None:
            return
        kill_group(self.process)
        self.process = None
        self.log.close()
        _remove_later(self._temp_dir)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _remove_later(path: str) -> None:
    """Remove a stopped node's temp dir in a process of its own, not waited for: a runtime env
    with pip packages leaves a copy of this virtualenv there (~650 MB, seconds to delete)."""
    subprocess.run(["sh", "-c", 'rm -rf -- "$1" &', "sh", path], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, check=False)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to the process group, and wait for its leader."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        pass
