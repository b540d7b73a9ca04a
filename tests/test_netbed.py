"""A cluster of test hosts on a network of their own (netbed.py): Linux network namespaces h1
(the Ray head), h2 and h3 (workers), 1 CPU each, and c, a client host outside the cluster.

One cluster for the module; the scenarios share it, the ones that lose a host last: a worker
host lost stays lost (the next scenario needs the head and one worker), the head host lost
starts every node again, and the last one cuts a worker host off for good.  The hosts share this machine's file system: RAYFLOW_HOME (the
history and the result store) is one folder every host reaches, as a real cluster's shared
result store would be.  Drivers run on the head host (``ip netns exec rft-h1 rayflow run``),
as a user logged in there would; submits and reads come from the client host.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import secrets
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from netbed import PREFIX, NetBed, NetCluster, clean_leftovers, ip, ours, unavailable
import net_flows
from waiting import wait_for

from rayflow.store import RunStore

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
HOSTS = ("h1", "h2", "h3", "c")
TOKEN = secrets.token_hex(32)


@pytest.fixture(scope="module")
def bed_allowed() -> None:
    """Skips where the bed cannot run (not root, no ``ip``), saying why; fails instead in CI."""
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
    out["nodes"] = {n["node_id"]: n["node_ip"] for n in answer.json()["data"]["result"]["result"] if n["state"] == "ALIVE"}
    print(json.dumps(out))
''')


def client_python(cluster: NetCluster, code: str, host: str = "c", **env: str) -> dict:
    """``code`` run by Python on ``host`` (the client host by default); the JSON it prints."""
    out = cluster.bed.run(host, [sys.executable, "-c", code], env=cluster.env_for(JOBS=cluster.job_address, **env))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_the_hosts_reach_only_each_other_and_joined_with_their_own_addresses(net_cluster):
    seen = client_python(net_cluster, NODES)
    assert seen["outside"] == "Network is unreachable"  # no route out: nothing was sent
    assert sorted(seen["nodes"].values()) == ["10.213.7.1", "10.213.7.2", "10.213.7.3"]
    net_cluster.node_ips = seen["nodes"]  # node id: address, for the scenarios below


WORKING_DIR = {
    "wdhelper.py": "def twice(x):\n    return 2 * x\n",
    "wdflows.py": textwrap.dedent("""
        import time
        import rayflow as rf


        @rf.task(chunk_size=4)
        def where(x: int) -> list:
            import ray
            import wdhelper  # from the uploaded working dir, on whichever host runs the chunk

            time.sleep(0.1)
            return [wdhelper.twice(x), ray.util.get_node_ip_address()]


        @rf.task
        def summary(pairs: list) -> dict:
            return {"sum": sum(p[0] for p in pairs), "hosts": sorted({p[1] for p in pairs})}


        @rf.flow
        def spread_wd(n: int = 48) -> dict:
            return summary(where.map(range(n)))


        @rf.task
        def nap(seconds: float) -> float:
            time.sleep(seconds)
            return seconds


        @rf.flow
        def sleepy(seconds: float = 120.0) -> float:
            return nap(seconds)
    """),
}


def client_rayflow(cluster: NetCluster, *args: str, host: str = "c", timeout: float = 180) -> subprocess.CompletedProcess:
    """``rayflow ARGS`` on ``host`` (the client host: its own RAYFLOW_HOME, the cluster's token)."""
    home = cluster.dir / f"{host}-home"
    return cluster.bed.run(host, [sys.executable, "-m", "rayflow", *args], timeout=timeout,
                           env=cluster.env_for(RAYFLOW_HOME=str(home)))


def history_state(cluster: NetCluster, run_id: str) -> str | None:
    return RunStore(cluster.rayflow_home).run_state(run_id)


def test_a_flow_submitted_from_the_client_host_runs_its_working_dir_on_every_host(net_cluster, tmp_path):
    """Scenario 4: submit --working-dir --follow from outside the cluster; show, runs, logs and
    cancel --address from there too."""
    for name, text in WORKING_DIR.items():
        (tmp_path / name).write_text(text)
    address = net_cluster.job_address
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        long = pool.submit(client_rayflow, net_cluster, "submit", "wdflows.py:sleepy", "--address", address,
                           "--working-dir", str(tmp_path), "--run-id", "net-long-1")
        followed = client_rayflow(net_cluster, "submit", "wdflows.py:spread_wd", "--address", address,
                                  "--working-dir", str(tmp_path), "--run-id", "net-wd-1", "--follow")
        assert long.result().returncode == 0, long.result().stderr
    assert followed.returncode == 0, followed.stdout[-3000:] + followed.stderr
    result = json.loads(followed.stdout.split("result: ", 1)[1].splitlines()[0])
    assert result["sum"] == sum(2 * x for x in range(48))
    assert {"10.213.7.2", "10.213.7.3"} & set(result["hosts"])  # chunks ran off the head, importing wdhelper
    assert "SUCCESS" in followed.stdout and "where" in followed.stdout  # the followed states came back
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        reads = [pool.submit(client_rayflow, net_cluster, *argv, "--address", address)
                 for argv in (["show", "net-wd-1"], ["runs"], ["logs", "net-wd-1"])]
        wait_for(lambda: history_state(net_cluster, "net-long-1") == "RUNNING", timeout=60, what="net-long-1 running")
        cancelled = client_rayflow(net_cluster, "cancel", "net-long-1", "--address", address)
        shown, listed, logs = (r.result() for r in reads)
    for out in (shown, listed, logs, cancelled):
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    assert "state: SUCCESS" in shown.stdout and "where" in shown.stdout
    assert any(line.startswith("net-wd-1") and "SUCCESS" in line for line in listed.stdout.splitlines())
    assert "state: SUCCESS" in logs.stdout
    assert cancelled.stdout.strip() == "run net-long-1: job STOPPED"
    wait_for(lambda: history_state(net_cluster, "net-long-1") == "CANCELLED", timeout=30, what="net-long-1 cancelled")


def head_rayflow(cluster: NetCluster, *args: str, **kw) -> subprocess.CompletedProcess:
    """``rayflow ARGS`` on the head host, as a user logged in there (RAY_ADDRESS: the cluster's GCS)."""
    return cluster.bed.run(cluster.head, [sys.executable, "-m", "rayflow", *args],
                           env=cluster.env_for(RAY_ADDRESS=cluster.gcs), **kw)


def test_a_maps_chunks_run_on_every_host_with_the_result_of_one_host(net_cluster, tmp_path):
    """Scenario 1: the chunk records' node ids name all three nodes; the result is the local one."""
    n = 300
    out = head_rayflow(net_cluster, "run", "net_flows:squares", "-p", f"n={n}", "-p", "delay=0.01",
                       "--address", net_cluster.gcs, "--run-id", "net-spread-1")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert f"result: {net_flows.expected(n)}" in out.stdout
    chunks = [c for c in RunStore(net_cluster.rayflow_home).run("net-spread-1")["chunks"] if c["task_key"] == "square"]
    assert len(chunks) == n // 10 and all(c["counts"] == {"SUCCESS": 10} for c in chunks)
    ran_on = {net_cluster.node_ips.get(c["node"], c["node"]) for c in chunks}
    assert ran_on == {"10.213.7.1", "10.213.7.2", "10.213.7.3"}, ran_on


UI_TOKEN = secrets.token_hex(24)
UI_READ = textwrap.dedent('''
    import json, os, requests
    url = "http://" + os.environ["UI"] + "/api/runs"
    bare = requests.get(url, timeout=10)
    wrong = requests.get(url, headers={"authorization": "Bearer " + "0" * 48}, timeout=10)
    given = requests.get(url, headers={"authorization": "Bearer " + os.environ["UI_TOKEN"]}, timeout=10)
    print(json.dumps({"bare": bare.status_code, "wrong": wrong.status_code, "given": given.status_code,
                      "runs": [r["run_id"] for r in given.json()] if given.ok else []}))
''')


def test_the_ui_on_the_head_is_reached_from_the_client_only_with_its_token(net_cluster):
    """Scenario 6: ``rayflow ui`` on the head host, listening on its address with a token; the
    client host gets 401 without the token and, with it, the runs it submitted (scenario 4)."""
    ui = net_cluster.bed.popen(net_cluster.head, [sys.executable, "-m", "rayflow", "ui", "--host", net_cluster.head_ip,
                                                  "--port", "4200"],
                               env=net_cluster.env_for(RAYFLOW_UI_TOKEN=UI_TOKEN), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        probe = f"import socket; socket.create_connection(('{net_cluster.head_ip}', 4200), timeout=1); print('{{}}')"
        wait_for(lambda: net_cluster.bed.run("c", [sys.executable, "-c", probe], timeout=30).returncode == 0,
                 timeout=60, what="the UI listening on the head's address")
        seen = client_python(net_cluster, UI_READ, UI=f"{net_cluster.head_ip}:4200", UI_TOKEN=UI_TOKEN)
    finally:
        os.killpg(ui.pid, signal.SIGKILL)
        ui.wait(10)
    assert (seen["bare"], seen["wrong"], seen["given"]) == (401, 401, 200), seen
    assert {"net-wd-1", "net-spread-1"} <= set(seen["runs"]), seen["runs"]  # submitted from the client; run on the head


def limit(cluster: NetCluster, *args: str) -> subprocess.CompletedProcess:
    out = head_rayflow(cluster, "limit", *args)
    assert out.returncode == 0, out.stderr
    return out


def in_use(cluster: NetCluster, name: str) -> int:
    return next(row["in_use"] for row in json.loads(limit(cluster, "ls", "--json").stdout) if row["name"] == name)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most of ``spans`` (start, end) open at one time."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])  # an end first at a tie
    open_now = most = 0
    for _, step in events:
        open_now += step
        most = max(most, open_now)
    return most


def test_a_tag_limit_holds_across_hosts_and_runs(net_cluster, tmp_path):
    """Scenario 5: limit netdb 2 (square's tag) on 3 one-CPU hosts; two runs at once, chunks of
    their maps on more than one host: never more than 2 items at once; every slot back at the end."""
    limit(net_cluster, "set", "netdb", "2")
    try:
        drivers = [run_on_head(net_cluster, tmp_path, f"net-tag-{i}", n=40, delay=0.05) for i in (1, 2)]
        outs = [driver.communicate(timeout=180)[0] for driver in drivers]
        assert [d.returncode for d in drivers] == [0, 0], outs
        assert all(f"result: {net_flows.expected(40)}" in out for out in outs)
        lines = (tmp_path / "spans.log").read_text().splitlines()
        spans = [(float(start), float(end)) for _, start, end in map(str.split, lines)]
        assert len(spans) == 80 and most_at_once(spans) <= 2  # a chunk runs its items one by one
        store = RunStore(net_cluster.rayflow_home)
        nodes = {c["node"] for i in (1, 2) for c in store.run(f"net-tag-{i}")["chunks"] if c["task_key"] == "square"}
        assert len(nodes) >= 2  # the limit held across hosts, not on one
        assert in_use(net_cluster, "netdb") == 0
    finally:
        limit(net_cluster, "rm", "netdb")


def ran(root: pathlib.Path) -> dict[int, list[str]]:
    """Per item, the addresses of the hosts it started on (net_flows' items.log), in order."""
    runs: dict[int, list[str]] = {}
    for line in (root / "items.log").read_text().splitlines() if (root / "items.log").exists() else ():
        item, host, _ = line.split()
        runs.setdefault(int(item), []).append(host)
    return runs


def run_on_head(cluster: NetCluster, root: pathlib.Path, run_id: str, *params: str, flow: str = "squares",
                n: int = 120, delay: float = 0.1) -> subprocess.Popen:
    """``rayflow run net_flows:FLOW`` on the head host, not waited for: items of ``delay`` s, chunks of 10."""
    argv = [sys.executable, "-m", "rayflow", "run", f"net_flows:{flow}", "-p", f"n={n}", "-p", f"delay={delay}",
            "-p", f"root={root}", "--address", cluster.gcs, "--run-id", run_id, *params]
    return cluster.bed.popen(cluster.head, argv, env=cluster.env_for(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)


def lose_a_host_mid_map(cluster: NetCluster, root: pathlib.Path, run_id: str, host: str, fault, *params: str) -> float:
    """A map run on the head host while ``fault()`` takes ``host`` away once an item started there:
    the run ends with the one-host result; the seconds from the fault to the run's end."""
    driver = run_on_head(cluster, root, run_id, *params)
    try:
        wait_for(lambda: any(cluster.bed.addresses[host] in hosts for hosts in ran(root).values()), timeout=60,
                 what=f"an item running on {host}")
        lost_at = time.monotonic()
        fault()
        out, _ = driver.communicate(timeout=120)  # nothing waits forever: bounded here
        took = time.monotonic() - lost_at
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, out[-3000:]
    assert f"result: {net_flows.expected(120)}" in out
    return took


def check_only_lost_chunks_ran_again(cluster: NetCluster, root: pathlib.Path, run_id: str, host: str,
                                     *, first: bool = True) -> list[dict]:
    """Every item ran; those run again had started on ``host`` (``first``: first there), in a chunk
    whose record shows it lost (no item final, its error the worker's or node's loss: a system
    retry ran its items again).  A host cut off keeps running the chunk it had until its raylet
    hears it was declared dead (or gives the GCS up): such an item may start there after its rerun."""
    runs = ran(root)
    assert sorted(runs) == list(range(120))
    again = {item: hosts for item, hosts in runs.items() if len(hosts) > 1}
    on_host = cluster.bed.addresses[host]
    assert all((hosts[0] == on_host) if first else (on_host in hosts) for hosts in again.values()), again
    chunks = [c for c in RunStore(cluster.rayflow_home).run(run_id)["chunks"] if c["task_key"] == "square"]
    lost = [c for c in chunks if not c["counts"]]
    assert all(c["error"] for c in lost), chunks
    assert {cluster.node_ips.get(c["node"]) for c in lost} <= {None, cluster.bed.addresses[host]}
    assert set(again) <= {i for c in lost for i in range(c["start"], c["stop"])}
    assert sum(c["items"] for c in chunks if c["counts"]) == 120  # the final chunks cover the map once
    return lost


def test_a_worker_host_killed_mid_map_loses_only_its_chunks(net_cluster, tmp_path):
    """Scenario 2a (and 5's second half): every Ray process of host h3 SIGKILLed mid-map (its process
    group) while the map's tag has a limit of 2 slots."""
    limit(net_cluster, "set", "netdb", "2")  # square's tag: the lost chunk's slot must come back
    try:
        took = lose_a_host_mid_map(net_cluster, tmp_path, "net-lost-1", "h3", lambda: net_cluster.kill("h3"))
        assert in_use(net_cluster, "netdb") == 0  # the slot the lost chunk held is back; the limit kept
    finally:
        limit(net_cluster, "rm", "netdb")
    lost = check_only_lost_chunks_ran_again(net_cluster, tmp_path, "net-lost-1", "h3")
    assert lost  # its chunk in flight was lost, and run again elsewhere
    print(f"\nh3 killed: the run ended {took:.1f}s later; lost chunks: {[(c['start'], c['stop'], c['error']) for c in lost]}")
    # h3 stays down: the scenarios after this one need h1 and h2 only, and the last starts all again


# The cut's length (the 20 s): past the ~10 s in which the tuned health checks
# (netbed.HEALTH_ENV) declare the node dead (Ray's default ~30 s would not): lost, then back.
CUT_SECONDS = 20.0


def test_a_worker_host_cut_off_mid_map_loses_only_its_chunks(net_cluster, tmp_path):
    """Scenario 2b: host h2's link down mid-map for CUT_SECONDS, then up.  Ray declares the node dead
    within the cut, and the FlowRunActor's node watch fails what h2 was running (a system retry on
    h1); the result is the one-host result."""
    def cut_for_a_while() -> None:
        net_cluster.bed.cut("h2")
        try:
            time.sleep(CUT_SECONDS)  # the fault itself: a link down this long, not a wait for something
        finally:
            net_cluster.bed.mend("h2")

    # its items slow on h2 (2 s each): the chunk it holds is still running when the link comes back
    took = lose_a_host_mid_map(net_cluster, tmp_path, "net-cut-1", "h2", cut_for_a_while, "-p", "slow_on=10.213.7.2")
    lost = check_only_lost_chunks_ran_again(net_cluster, tmp_path, "net-cut-1", "h2", first=False)
    print(f"\nh2 cut off for {CUT_SECONDS:g}s: the run ended {took - CUT_SECONDS:.1f}s after the link came back; "
          f"lost chunks: {[(c['start'], c['stop'], c['error']) for c in lost]}")
    # h2, declared dead, is not used again: the last scenario starts every node again


def stored_chunks(cluster: NetCluster, run_id: str) -> list[tuple[int, int]]:
    """The (start, stop) of each chunk of ``kept_square`` in the shared result store."""
    found = (cluster.rayflow_home / "results").glob(f"runs/{run_id}/kept_square/chunk-*-base.*")
    return sorted(tuple(int(n) for n in path.name.split("-")[1:3]) for path in found)


def test_the_head_host_lost_mid_run_is_crashed_and_resumed_from_the_shared_result_store(net_cluster, tmp_path):
    """Scenario 3 (it restarts the cluster, for the one after it): the head host lost (its node and the run's driver
    SIGKILLed) once some chunks were stored; the next reader records the run CRASHED; with the
    cluster started again, ``rayflow resume`` finishes it, running only the chunks not stored."""
    driver = run_on_head(net_cluster, tmp_path, "net-head-1", flow="kept_squares", delay=0.1)
    try:
        wait_for(lambda: len(stored_chunks(net_cluster, "net-head-1")) >= 3, timeout=120, what="three stored chunks")
        lost_at = time.monotonic()
        net_cluster.lose("h1")
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(10)
    # the next reader of the history (here, of the head host's) finds its driver gone
    assert RunStore(net_cluster.rayflow_home).run("net-head-1")["state"] == "CRASHED"
    net_cluster.restart_all()
    stored = stored_chunks(net_cluster, "net-head-1")  # now: the old workers' last writes are in
    before = ran(tmp_path)
    out = head_rayflow(net_cluster, "resume", "net-head-1", timeout=180)
    took = time.monotonic() - lost_at
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert f"result: {net_flows.expected(120)}" in out.stdout
    after = ran(tmp_path)
    kept = {i for start, stop in stored for i in range(start, stop)}
    assert kept and all(len(after[i]) == len(before[i]) for i in kept)  # stored: loaded, not run again
    rerun = {i for i in range(120) if len(after.get(i, ())) > len(before.get(i, ()))}
    assert rerun and rerun.isdisjoint(kept) and rerun | kept == set(range(120))
    print(f"\nhead lost: {len(stored)} chunks stored before; resumed and done {took:.1f}s after the loss "
          f"(cluster restart included)")


def test_a_worker_host_cut_off_for_good_mid_map_loses_only_its_chunks(net_cluster, tmp_path):
    """Scenario 2c (last: h2 stays cut off; the one before started every node again): host h2's link
    down mid-map and never up.  Ray declares the node dead but does not fail what it had pushed
    there; the FlowRunActor's node watch does (runtime.actor.node_watch): those chunks end as system
    errors and run again on h1 and h3.  Bounded by lose_a_host_mid_map's timeout, never a hang."""
    took = lose_a_host_mid_map(net_cluster, tmp_path, "net-cut-2", "h2", lambda: net_cluster.bed.cut("h2"))
    lost = check_only_lost_chunks_ran_again(net_cluster, tmp_path, "net-cut-2", "h2", first=False)
    assert lost and all("NodeDiedError" in c["error"] for c in lost), lost  # failed by the watch, retried
    print(f"\nh2 cut off for good: the run ended {took:.1f}s later; lost chunks: {[(c['start'], c['stop']) for c in lost]}")
