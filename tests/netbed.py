"""A test bed of several hosts on one machine: a Linux network namespace per host, on a network
of their own, and a Ray cluster across them (``NetCluster``).

- The network: namespace ``rft-sw`` holds a bridge (the switch); each host ``rft-NAME`` is a
  namespace joined to it by a veth pair (``v-NAME`` on the switch, ``eth0`` in the host), with
  one address of SUBNET and loopback up.  No host has a default route, and the switch is not
  joined to this machine's own network: a host reaches the other test hosts and nothing else.
  ``cut(NAME)``/``mend(NAME)`` take a host's link down and up (its switch side).
- Everything made is named with PREFIX, and ``clean_leftovers`` removes what a killed test run
  left (its processes, killed by the namespace they are in, then the namespaces: the links go
  with them); ``NetBed.up`` calls it first, ``down`` removes this bed's own.
- ``NetCluster``: ``ray start --head --block`` on the first host, ``ray start --block`` on the
  others, each with its own ``--temp-dir``, ``--node-ip-address`` and process group, and Ray's
  token authentication on; ``kill(NAME)`` SIGKILLs a host's process group (every Ray process
  of that node), ``restart(NAME)`` starts it again.  The nodes' health checks are made faster
  than Ray's defaults (HEALTH_ENV: a lost node is found in ~4 s rather than ~30 s).

It needs root and ``ip`` (iproute2): ``unavailable()`` says why it cannot run here, if so.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence

from ray_cluster import clean_env, kill_group

PREFIX = "rft-"
SWITCH = PREFIX + "sw"
SUBNET = "10.213.7"  # a /24 private to these tests
RAY = pathlib.Path(sys.executable).with_name("ray")
RAY_PORT, JOB_PORT = 6379, 8265  # each host has its own ports: Ray's defaults clash with nothing
# A lost node is declared dead after about threshold * period (+ timeout): ~10 s, not Ray's ~30 s
# (looser would be slower; tighter declares a busy node dead on a loaded 2-core machine).
HEALTH_ENV = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5",
              "RAY_health_check_timeout_ms": "1000", "RAY_health_check_initial_delay_ms": "5000"}


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable() -> str | None:
    """Why the test bed cannot run on this machine, or None."""
    if os.geteuid() != 0:
        return "the network-namespace test bed needs root (ip netns)"
    if shutil.which("ip") is None:
        return "the network-namespace test bed needs `ip` (iproute2)"
    probe = PREFIX + "probe"
    made = ip("netns", "add", probe, check=False)
    ip("netns", "del", probe, check=False)
    if made.returncode != 0:
        return f"cannot make a network namespace here: {made.stderr.strip()}"
    return None


def ours() -> list[str]:
    """The namespaces named with PREFIX (this bed's, or a killed run's)."""
    listed = ip("netns", "list", check=False).stdout.split("\n")
    return [line.split()[0] for line in listed if line.startswith(PREFIX)]


def kill_inside(namespace: str) -> None:
    """SIGKILL every process in ``namespace`` (only ours are there: the name is the tests')."""
    pids = ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def clean_leftovers() -> list[str]:
    """Remove every namespace named with PREFIX, killing what runs in it first; their names."""
    found = ours()
    for namespace in found:
        kill_inside(namespace)
    for namespace in found:
        ip("netns", "del", namespace, check=False)
    return found


class NetBed:
    """Hosts ``names`` (namespaces rft-NAME), addresses SUBNET.1, .2, ... in that order."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.addresses = {name: f"{SUBNET}.{i}" for i, name in enumerate(self.names, start=1)}

    def namespace(self, name: str) -> str:
        return PREFIX + name

    def up(self) -> NetBed:
        clean_leftovers()
        try:
            ip("netns", "add", SWITCH)
            ip("-n", SWITCH, "link", "add", "br0", "type", "bridge")
            ip("-n", SWITCH, "link", "set", "br0", "up")
            for name in self.names:
                ns = self.namespace(name)
                ip("netns", "add", ns)
                ip("-n", ns, "link", "set", "lo", "up")
                ip("-n", SWITCH, "link", "add", f"v-{name}", "type", "veth", "peer", "name", "eth0", "netns", ns)
                ip("-n", SWITCH, "link", "set", f"v-{name}", "master", "br0", "up")
                ip("-n", ns, "addr", "add", f"{self.addresses[name]}/24", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for name in self.names:
            kill_inside(self.namespace(name))
        for ns in [*map(self.namespace, self.names), SWITCH]:
            ip("netns", "del", ns, check=False)

    def argv(self, name: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(name), *map(str, argv)]

    def run(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120,
            **kw) -> subprocess.CompletedProcess:
        """``argv`` on host ``name``, to its end: its output, as text."""
        return subprocess.run(self.argv(name, argv), capture_output=True, text=True, timeout=timeout,
                              env=dict(env) if env is not None else None, **kw)

    def popen(self, name: str, argv: Sequence[str], **kw) -> subprocess.Popen:
        """``argv`` on host ``name``, in a process group of its own."""
        return subprocess.Popen(self.argv(name, argv), start_new_session=True, **kw)

    def cut(self, name: str) -> None:
        ip("-n", SWITCH, "link", "set", f"v-{name}", "down")

    def mend(self, name: str) -> None:
        ip("-n", SWITCH, "link", "set", f"v-{name}", "up")


class NetCluster:
    """A Ray head on ``bed``'s first host and a worker node on each of ``workers``; ``env`` is
    every node's (and ``env_for``'s) environment, Ray's token included."""

    def __init__(self, bed: NetBed, workers: Sequence[str], *, token: str, env: Mapping[str, str],
                 num_cpus: int = 1, start_timeout: float = 180.0):
        self.bed, self.head = bed, bed.names[0]
        self.workers = list(workers)
        self.token, self.num_cpus, self.start_timeout = token, num_cpus, start_timeout
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix=PREFIX, dir="/tmp"))  # short: Ray's socket paths
        self.home = self.dir / "home"
        self.home.mkdir()
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, **HEALTH_ENV, **env,
                    "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
        self.head_ip = bed.addresses[self.head]
        self.gcs = f"{self.head_ip}:{RAY_PORT}"
        self.job_address = f"http://{self.head_ip}:{JOB_PORT}"
        self.nodes: dict[str, subprocess.Popen] = {}
        self.starts: dict[str, int] = {}

    def env_for(self, **extra: str) -> dict[str, str]:
        return clean_env(self.home, **{**self.env, **extra})

    def _log(self, name: str) -> pathlib.Path:
        return self.dir / f"{name}-{self.starts[name]}.log"

    def _launch(self, name: str) -> None:
        self.starts[name] = self.starts.get(name, 0) + 1
        temp_dir = self.dir / f"{name}{self.starts[name]}"
        address = self.bed.addresses[name]
        command = [RAY, "start", "--block", f"--node-ip-address={address}", f"--num-cpus={self.num_cpus}",
                   f"--temp-dir={temp_dir}", "--disable-usage-stats", "--object-store-memory=100000000"]
        if name == self.head:
            command += ["--head", f"--port={RAY_PORT}", "--include-dashboard=true",
                        f"--dashboard-host={address}", f"--dashboard-port={JOB_PORT}"]
        else:
            command += [f"--address={self.gcs}"]
        with open(self._log(name), "wb") as log:
            self.nodes[name] = self.bed.popen(name, command, stdout=log, stderr=subprocess.STDOUT,
                                              env=self.env_for())

    def _wait_started(self, names: Sequence[str], tries: int = 3) -> None:
        """Until each of ``names`` says "Ray runtime started"; a node whose ``ray start`` gave up
        (Ray waits 30 s for its raylet, which a loaded 2-core machine can take) is started again,
        ``tries`` times in all."""
        deadline = time.time() + self.start_timeout
        waiting = {name: tries for name in names}
        while waiting:
            for name in list(waiting):
                text = self._log(name).read_bytes()
                if b"Ray runtime started" in text:
                    del waiting[name]
                elif time.time() > deadline or (self.nodes[name].poll() is not None and waiting[name] <= 1):
                    head = "" if name == self.head else (
                        f"; the head is {'up' if self.alive(self.head) else 'down'}, its log ends: "
                        + self._log(self.head).read_text(errors="replace")[-1500:])
                    raise RuntimeError(f"ray start on {name} did not come up: {text.decode(errors='replace')[-2000:]}{head}")
                elif self.nodes[name].poll() is not None:
                    waiting[name] -= 1
                    self.kill(name)
                    self._launch(name)
            time.sleep(0.2)

    def start(self) -> NetCluster:
        try:
            self._launch(self.head)
            self._wait_started([self.head])
            for name in self.workers:
                self._launch(name)
            self._wait_started(self.workers)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, name: str) -> None:
        """SIGKILL host ``name``'s Ray node: its process group (every Ray process of the node)."""
        process = self.nodes.pop(name, None)
        if process is not None:
            kill_group(process)

    def lose(self, name: str) -> None:
        """Host ``name`` lost: its Ray node's process group and every other process on it (a driver)
        SIGKILLed."""
        self.kill(name)
        kill_inside(self.bed.namespace(name))

    def restart_all(self) -> None:
        """Every node started again, the head first (workers of a lost head cannot join a new one)."""
        for name in list(self.nodes):
            self.kill(name)
        self._launch(self.head)
        self._wait_started([self.head])
        for name in self.workers:
            self._launch(name)
        self._wait_started(self.workers)

    def restart(self, name: str) -> None:
        """Host ``name``'s node started again (a head: as the head, same address and ports)."""
        self.kill(name)
        self._launch(name)
        self._wait_started([name])

    def alive(self, name: str) -> bool:
        process = self.nodes.get(name)
        return process is not None and process.poll() is None

    def stop(self) -> None:
        for name in list(self.nodes):
            self.kill(name)
        subprocess.run(["sh", "-c", 'rm -rf -- "$1" &', "sh", str(self.dir)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, check=False)

    def __enter__(self) -> NetCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
