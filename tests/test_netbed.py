"""A cluster of test hosts on a network of their own (netbed.py): Linux network namespaces h1
(the Ray head), h2 and h3 (workers), 1 CPU each, and c, a client host outside the cluster.

One cluster for the module; the scenarios share it, the ones that lose a host last (each
starts again what it killed).  The hosts share this machine's file system: RAYFLOW_HOME (the
history and the result store) is one folder every host reaches, as a real cluster's shared
result store would be.  Drivers run on the head host (``ip netns exec rft-h1 rayflow run``),
as a user logged in there would; submits and reads come from the client host.
"""

from __future__ import annotations

import json
import secrets
import textwrap

import pytest
from netbed import PREFIX, NetBed, NetCluster, clean_leftovers, ip, ours, unavailable
from waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
HOSTS = ("h1", "h2", "h3", "c")
TOKEN = secrets.token_hex(32)


@pytest.fixture(scope="module")
def bed_allowed() -> None:
    """Skips where the bed cannot run (not root, no ``ip``), saying why; fails instead in CI."""
    import os

    reason = unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the test bed must run in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def bed(bed_allowed):
    made = NetBed(HOSTS).up()
    try:
        yield made
    finally:
        made.down()


@pytest.fixture(scope="module")
def net_cluster(bed, tmp_path_factory):
    home = tmp_path_factory.mktemp("netbed-home")
    with NetCluster(bed, ["h2", "h3"], token=TOKEN, env={"RAYFLOW_HOME": str(home)}) as cluster:
        cluster.rayflow_home = home
        yield cluster


def test_what_a_killed_test_run_left_is_removed_at_the_next_start(bed_allowed):
    """Run first, before the module's bed is up: a namespace named like the bed's, with a process
    in it, is what a killed run leaves; the next start (``clean_leftovers``) removes both."""
    import subprocess

    ip("netns", "add", PREFIX + "left")
    left = subprocess.Popen(["ip", "netns", "exec", PREFIX + "left", "sleep", "300"], start_new_session=True)
    try:
        wait_for(lambda: str(left.pid) in ip("netns", "pids", PREFIX + "left").stdout, timeout=10, what="the process")
        assert PREFIX + "left" in clean_leftovers()
        assert left.wait(10) == -9 and PREFIX + "left" not in ours()
    finally:
        left.kill()
        ip("netns", "del", PREFIX + "left", check=False)


NODES = textwrap.dedent('''
    import json, os, socket, requests
    out = {}
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=2)  # TEST-NET-1: outside the subnet
        out["outside"] = "reached"
    except OSError as exc:
        out["outside"] = exc.strerror
    answer = requests.get(os.environ["JOBS"] + "/api/v0/nodes", timeout=10,
                          headers={"authorization": "Bearer " + os.environ["RAY_AUTH_TOKEN"]})
    out["nodes"] = sorted(n["node_ip"] for n in answer.json()["data"]["result"]["result"] if n["state"] == "ALIVE")
    print(json.dumps(out))
''')


def client_python(cluster: NetCluster, code: str, host: str = "c", **env: str) -> dict:
    """``code`` run by Python on ``host`` (the client host by default); the JSON it prints."""
    import sys

    out = cluster.bed.run(host, [sys.executable, "-c", code], env=cluster.env_for(JOBS=cluster.job_address, **env))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_the_hosts_reach_only_each_other_and_joined_with_their_own_addresses(net_cluster):
    seen = client_python(net_cluster, NODES)
    assert seen["outside"] == "Network is unreachable"  # no route out: nothing was sent
    assert seen["nodes"] == ["10.213.7.1", "10.213.7.2", "10.213.7.3"]
