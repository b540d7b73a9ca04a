"""Items that kill their worker, on real Ray: the blame narrows down to the item, not its chunk.

A worker process that dies (``os._exit``, a segfault, an out-of-memory kill) takes its whole
chunk's work with it.  The orchestrator reruns the chunk's items in halves until the item at
fault runs alone (engine.policy.after_worker_death), so only that item fails, named, and the
flow's other results are those of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from cli_runner import REPO, run_cli_in_process

import rayflow as rf
from rayflow.states import StateType as T
from rayflow.store import RunStore

CULPRIT = 7


@rf.task
def crash_on(x: int, culprit: int) -> int:
    if x == culprit:
        os._exit(1)  # the worker process dies: no exception, no report
    return 2 * x


@rf.task
def total(xs: list[int]) -> int:
    return sum(xs)


@rf.task
def plus_one(x: int) -> int:
    return x + 1


@rf.flow
def crashing_map(n: int = 200, culprit: int = CULPRIT):
    r"""
      crash_on.map(range(n))     item `culprit` kills its worker
        /              \
    total          plus_one.map  (element-wise: the culprit's item is gated)
    """
    doubled = crash_on.with_options(chunk_size=64, min_success_ratio=0.99).map(range(n), culprit=rf.unmapped(culprit))
    return total(doubled), plus_one.map(doubled)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.usefixtures("ray_session")
def test_an_item_that_kills_its_worker_fails_alone_and_named():
    run = crashing_map.run()
    healthy = [x for x in range(200) if x != CULPRIT]

    states = run.map_states("crash_on")
    failed = {i: s for i, s in enumerate(states) if s.type is not T.SUCCESS}
    assert list(failed) == [CULPRIT]
    message = failed[CULPRIT].message
    assert f"the worker died while running item {CULPRIT}, alone (7 works holding it died)" in message, message
    assert "WorkerCrashedError" in message
    assert run.task_result("crash_on") == [2 * x if x != CULPRIT else None for x in range(200)]

    # the rest of the flow is what an uninterrupted run gives, without the culprit's item
    assert run.task_states["crash_on"].type is T.MAPPED
    assert f"200 items: 199 ok, 1 failed; first error: item {CULPRIT}: WorkerCrashedError" in run.task_states["crash_on"].message
    assert run.task_result("total") == sum(2 * x for x in healthy)
    after = run.map_states("plus_one")
    assert [i for i, s in enumerate(after) if s.type is not T.SUCCESS] == [CULPRIT]
    assert after[CULPRIT].type is T.TRIGGER_FAILED
    assert run.task_result("plus_one") == [2 * x + 1 if x != CULPRIT else None for x in range(200)]

    # the history tells the same story, and shows the narrowing: one lost work per halving
    shown = run_cli_in_process("show", run.run_id, "--json")  # read-only: in this process
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    row = next(r for r in record["task_rows"] if r["task"] == "crash_on")
    assert (row["items"]["total"], row["items"]["ok"], row["items"]["failed"]) == (200, 199, 1)
    assert row["state"] == "MAPPED"  # 199 of 200 is within its min_success_ratio; the note names the culprit
    assert f"item {CULPRIT}: WorkerCrashedError: the worker died while running item {CULPRIT}" in row["note"]
    chunks = [c for c in record["chunks"] if c["task_key"] == "crash_on"]
    lost = sorted(((c["start"], c["stop"]) for c in chunks if not c["counts"]), key=lambda span: span[0] - span[1])
    assert lost == [(0, 64), (0, 32), (0, 16), (0, 8), (4, 8), (6, 8)]  # each split: nothing final
    assert [(c["start"], c["stop"], c["counts"]) for c in chunks if "FAILED" in c["counts"]] == [(7, 8, {"FAILED": 1})]
    assert len(chunks) == 4 + 2 * 6  # the 4 chunks, and two halves per split: log2(64) + 1 works died
    # the culprit's own row, as the engine recorded it: FAILED, its error the worker's death
    (item,) = RunStore().items(run.run_id, "crash_on")
    assert (item["item"], item["state"], item["attempts"]) == (CULPRIT, "FAILED", 1)
    assert item["error_type"].endswith("WorkerCrashedError") and f"item {CULPRIT}" in item["message"]


@rf.task(retries=0, system_retries=2)
def always_dies() -> int:
    os._exit(1)


@rf.flow
def plain_death():
    return always_dies()


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("ray_session")
def test_a_plain_task_whose_worker_dies_spends_its_system_retries_then_fails():
    run = plain_death.run()
    history = run.history("always_dies")
    retrying = [s for s in history if s.type is T.RETRYING]
    assert ["system retry 1 of 2" in retrying[0].message, "system retry 2 of 2" in retrying[1].message] == [True, True]
    assert len(retrying) == 2
    assert all(s.error.system for s in retrying)
    final = run.task_states["always_dies"]
    assert final.type is T.FAILED and final.attempt == 3
    assert final.error.system and final.error.type_name == "WorkerCrashedError"


# -- a real out-of-memory kill, in a Ray of its own whose memory monitor is set low ----------------

OOM_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import rayflow as rf

    @rf.task
    def hungry(x: int, limit: int) -> int:
        if x == 2:  # grows until Ray's memory monitor kills its worker (or gives up at `limit`)
            blocks = []
            while sum(map(len, blocks)) < limit:
                blocks.append(bytearray(b"\\x01") * (512 << 20))  # every page written: resident
                time.sleep(0.05)
            return -1
        return 10 * x

    @rf.flow
    def hog(limit: int):
        # two chunks of two: item 2 shares its chunk with item 3, which the one halving clears;
        # no system retry, so item 2 fails the first time it dies alone (each death costs seconds)
        return hungry.with_options(chunk_size=2, system_retries=0, min_success_ratio=0.5).map(
            range(4), limit=rf.unmapped(limit))

    import ray
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    run = hog.run(limit=int(sys.argv[1]))
    states = run.map_states("hungry")
    print(json.dumps({"map": run.task_states["hungry"].message, "values": run.task_result("hungry"),
                      "items": [[s.type.value, s.message] for s in states]}))
    ray.shutdown()
    """
)


def _memory() -> tuple[int, int]:
    """(total, used) bytes of this machine, as Ray's memory monitor counts them (MemTotal - MemAvailable)."""
    info = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            name, value = line.split(":", 1)
            info[name] = int(value.split()[0]) * 1024
    return info["MemTotal"], info["MemTotal"] - info["MemAvailable"]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_an_item_that_exhausts_memory_is_killed_and_fails_alone_and_named(tmp_path):
    """Ray's memory monitor is set to kill a worker once the node uses a few GiB more than it does
    now (headroom for other processes on the machine); item 2 of 4 grows until it is killed.  Each
    kill costs the node its workers, restarted in seconds, so the map is small: 2 works die (its
    chunk of two, then item 2 alone, after the halving that clears item 3)."""
    total_bytes, used = _memory()
    headroom = min(4 << 30, (total_bytes - used) // 4)
    env = {
        **os.environ,
        "RAY_memory_usage_threshold": f"{(used + headroom) / total_bytes:.4f}",
        "RAY_memory_monitor_refresh_ms": "100",
        "RAYFLOW_HOME": str(tmp_path),
    }
    env.pop("RAY_ADDRESS", None)
    script = tmp_path / "hog.py"
    script.write_text(OOM_SCRIPT)
    limit = 2 * headroom  # never reached when the monitor works: the item would return -1
    proc = subprocess.Popen(
        [sys.executable, str(script), str(limit)], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,  # its Ray is in its group
    )
    try:
        out, err = proc.communicate(timeout=360)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err[-4000:]
    result = json.loads(out.strip().splitlines()[-1])
    failed = {i: (state, message) for i, (state, message) in enumerate(result["items"]) if state != "SUCCESS"}
    assert list(failed) == [2], result["items"]
    state, message = failed[2]
    assert state == "FAILED" and "OutOfMemoryError: the worker died while running item 2, alone" in message, message
    assert "(2 works holding it died)" in message, message  # its chunk, then item 2 alone: one halving
    assert "running low on memory" in message
    assert result["values"] == [0, 10, None, 30]
    assert "4 items: 3 ok, 1 failed; first error: item 2: OutOfMemoryError" in result["map"]
