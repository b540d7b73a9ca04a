"""Pause and approve: ``triggers.manual_only``, ``rf.pause``, ``rf.approve`` / ``rf.reject`` and
the CLI's ``approve`` / ``reject``, on both runners (the run waits in a thread of this process
while the test decides, as a person would from another shell)."""

from __future__ import annotations

import pathlib
import threading

import pydantic
import pytest
from cli_runner import run_cli_in_process
from waiting import wait_for

import rayflow as rf
from rayflow.store import RunStore
from rayflow.store.approvals import PauseStore


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAYFLOW_RESULTS", raising=False)
    return tmp_path / "home"


class Sign(pydantic.BaseModel):
    amount: int
    note: str = ""


@rf.task
def one() -> int:
    return 1


@rf.task
def side() -> str:
    return "went on"


@rf.task(trigger=rf.triggers.manual_only)
def ship(x: int) -> int:
    return x + 10


@rf.task
def after(x: int) -> int:
    return x * 2


@rf.flow
def manual_flow():
    return [after(ship(one())), side()]


@rf.task
def signed(x: int, root: str) -> int:
    with open(pathlib.Path(root) / "before.count", "a") as f:  # code before a pause runs twice
        f.write("ran\n")
    got = rf.pause("sign the payment", wait_for_input=Sign)
    return x + got.amount


@rf.flow
def signed_flow(root: str):
    return signed(one(), root)


@rf.task
def waits() -> str:
    rf.pause("approve within a moment", timeout=0.3)
    return "approved"


@rf.flow
def timed_flow():
    return waits()


def start(flow, runner: str, run_id: str, **params):
    """The run in a thread of this process (its driver), and the list its FlowRun lands in."""
    out: list = []
    thread = threading.Thread(
        target=lambda: out.append(flow.with_options(runner=runner, run_id=run_id).run(**params)), daemon=True
    )
    thread.start()
    return thread, out


def task_state(run_id: str, key: str) -> str | None:
    run = RunStore().run(run_id) or {}
    states = [t["state"] for t in run.get("transitions") or () if t["task_key"] == key]
    return states[-1] if states else None


def paused(run_id: str, key: str) -> bool:
    return task_state(run_id, key) == "PAUSED" and PauseStore(RunStore()).pause(run_id, key, None) is not None


def test_a_manual_only_task_waits_paused_while_the_rest_goes_on_until_approved_from_the_cli(home, runner):
    thread, out = start(manual_flow, runner, f"manual-{runner}")
    wait_for(lambda: paused(f"manual-{runner}", "ship"), what="ship PAUSED")
    wait_for(lambda: task_state(f"manual-{runner}", "side") == "SUCCESS", what="the rest of the run going on")
    assert task_state(f"manual-{runner}", "after") in (None, "PENDING")  # downstream waits
    if runner == "ray":  # a paused task holds no CPU: every CPU of the session's Ray is free
        import ray

        wait_for(lambda: ray.available_resources().get("CPU") == ray.cluster_resources().get("CPU"), 10, "free CPUs")
    shown = run_cli_in_process("show", f"manual-{runner}", home=home)
    assert "PAUSED" in shown.stdout and "waiting for approval" in shown.stdout, shown.stdout
    listed = run_cli_in_process("runs", home=home)
    assert "1 waiting for approval" in listed.stdout, listed.stdout
    approved = run_cli_in_process("approve", f"manual-{runner}", "ship", home=home)
    assert approved.returncode == 0 and "its run goes on" in approved.stdout, approved.stdout + approved.stderr
    thread.join(30)
    assert out and out[0].result() == [22, "went on"]
    row = PauseStore(RunStore()).pause(f"manual-{runner}", "ship", None)
    assert row["decision"] == "approved" and row["decided_by"] and row["decided_at"]
    logs = run_cli_in_process("logs", f"manual-{runner}", home=home)
    assert "pause of ship approved by" in logs.stdout, logs.stdout


def test_rf_pause_refuses_bad_input_naming_the_field_and_returns_the_model_once_approved(home, tmp_path, runner):
    run_id = f"signed-{runner}"
    thread, out = start(signed_flow, runner, run_id, root=str(tmp_path))
    wait_for(lambda: paused(run_id, "signed"), what="signed PAUSED")
    assert PauseStore(RunStore()).pause(run_id, "signed", None)["message"] == "sign the payment"
    with pytest.raises(rf.ApprovalError, match="field 'amount'"):
        rf.approve(run_id, "signed", {"amount": "lots"})
    bad = run_cli_in_process("approve", run_id, "signed", "-p", "amount=lots", home=home)
    assert bad.returncode == 2 and "field 'amount'" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert paused(run_id, "signed")  # refused: it stays paused
    rf.approve(run_id, "signed", Sign(amount=5, note="ok"))
    thread.join(30)
    assert out and out[0].result() == 6
    assert (tmp_path / "before.count").read_text().count("ran") == 2  # ran again from its start
    with pytest.raises(rf.ApprovalError, match="not paused"):
        rf.approve(run_id, "signed", {"amount": 1})


def test_a_reject_ends_the_task_failed_with_the_reason_and_who(home, runner):
    run_id = f"rejected-{runner}"
    thread, out = start(manual_flow, runner, run_id)
    wait_for(lambda: paused(run_id, "ship"), what="ship PAUSED")
    rejected = run_cli_in_process("reject", run_id, "ship", "--reason", "not today", home=home)
    assert rejected.returncode == 0, rejected.stderr
    thread.join(30)
    states = out[0].task_states
    assert states["ship"].type.value == "FAILED" and "not today" in states["ship"].message
    assert "rejected by" in states["ship"].message
    assert states["after"].type.value == "TRIGGER_FAILED"


def test_a_pause_not_approved_in_time_ends_failed(home, runner):
    run = timed_flow.with_options(runner=runner, run_id=f"timed-{runner}").run()
    state = run.task_states["waits"]
    assert state.type.value == "FAILED" and "not approved within 0.3s" in state.message


KILLED_FLOW = '''
import pathlib

import rayflow as rf


@rf.task
def first(root: str) -> int:
    with open(pathlib.Path(root) / "first.count", "a") as f:
        f.write("ran\\n")
    return 20


@rf.task(trigger=rf.triggers.manual_only)
def gate(x: int) -> int:
    return x + 1


@rf.flow
def killed(root: str):
    return gate(first(root))
'''


def test_an_approval_after_the_driver_was_killed_resumes_the_run_loading_what_it_persisted(home, tmp_path, runner, request):
    """The driver (on the in-process runner, or joined to the session's Ray) is SIGKILLed while a
    task waits; ``rayflow approve`` resumes the run on the runner it ran on."""
    import os
    import signal
    import subprocess
    import sys

    from cli_runner import run_cli

    run_id = f"killed-pause-{runner}"
    where = ["--local"] if runner == "local" else []  # on Ray: the one RAY_ADDRESS names
    ray_env = {"RAY_ADDRESS": request.getfixturevalue("ray_session")} if runner == "ray" else {}
    (tmp_path / "killed_flow.py").write_text(KILLED_FLOW)
    env = {**os.environ, "RAYFLOW_HOME": str(home), **ray_env}
    driver = subprocess.Popen(
        [sys.executable, "-m", "rayflow", "run", f"{tmp_path / 'killed_flow.py'}:killed", *where,
         "--run-id", run_id, "-p", f"root={tmp_path}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: paused(run_id, "gate") or driver.poll() is not None, 60, "gate PAUSED")
        assert driver.poll() is None
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait(30)
    out = run_cli("approve", run_id, "gate", home=home, **ray_env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "driver is gone" in out.stdout and "21" in out.stdout, out.stdout
    assert (tmp_path / "first.count").read_text().count("ran") == 1  # its persisted result was loaded
    assert RunStore().run(run_id)["state"] == "SUCCESS"


REJECTED_FLOW = KILLED_FLOW + '''

@rf.task
def ship(x: int) -> int:
    return x


@rf.task(trigger=rf.triggers.any_failed)
def tidy(root: str) -> str:
    (pathlib.Path(root) / "tidied").write_text("yes")
    return "tidied"


@rf.flow
def rejected(root: str):
    g = gate(first(root))
    ship(g)
    tidy(root, wait_for=[g])
'''


def test_a_reject_after_the_driver_was_killed_resumes_the_run_to_end_the_task_failed(home, tmp_path):
    """``rayflow reject`` of a run whose driver was SIGKILLed resumes it as its next attempt: the
    task ends FAILED with the reason (not run), its downstream tasks settle by their triggers,
    and the run ends FAILED, printed, exit 1 (as ``rayflow resume``'s)."""
    import os
    import signal
    import subprocess
    import sys

    from cli_runner import run_cli

    (tmp_path / "rejected_flow.py").write_text(REJECTED_FLOW)
    env = {**os.environ, "RAYFLOW_HOME": str(home)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "rayflow", "run", f"{tmp_path / 'rejected_flow.py'}:rejected", "--local",
         "--run-id", "killed-reject", "-p", f"root={tmp_path}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: paused("killed-reject", "gate") or driver.poll() is not None, 60, "gate PAUSED")
        assert driver.poll() is None
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait(30)
    out = run_cli("reject", "killed-reject", "gate", "--reason", "not today", home=home)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "driver is gone" in out.stdout and "FAILED" in out.stdout, out.stdout
    run = RunStore().run("killed-reject")
    assert run["state"] == "FAILED" and run["attempt"] == 2
    last = {t["task_key"]: t for t in run["transitions"]}
    assert last["gate"]["state"] == "FAILED" and "rejected by" in last["gate"]["message"] and "not today" in last["gate"]["message"]
    assert last["ship"]["state"] == "TRIGGER_FAILED" and last["tidy"]["state"] == "SUCCESS"
    assert (tmp_path / "tidied").read_text() == "yes"
    assert (tmp_path / "first.count").read_text().count("ran") == 1  # its persisted result was loaded


def test_a_pause_is_a_span_from_the_pause_to_its_outcome(home, monkeypatch):
    from otlp_sink import HttpSink

    sink = HttpSink()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
    try:
        run = timed_flow.with_options(runner="local", run_id="timed-traced").run()
        spans = sink.wait_for(lambda s: any(x["name"] == "pause waits" for x in s))
    finally:
        sink.close()
    (pause,) = [s for s in spans if s["name"] == "pause waits" and s["trace_id"] == run.trace_id]
    assert pause["attributes"]["rayflow.pause.message"] == "approve within a moment"
    assert pause["attributes"]["rayflow.pause.outcome"] == "not approved within 0.3s"


@rf.task(chunk_size=3)
def asks(x: int) -> int:
    if x > 1:
        got = rf.pause(f"item {x}", wait_for_input=Sign)
        return x * 10 + got.amount
    return x


@rf.flow
def mapped_pause():
    return asks.map([1, 2, 3])


def item_paused(run_id: str, index: int) -> bool:
    row = PauseStore(RunStore()).pause(run_id, "asks", index)
    return row is not None and row["decision"] is None


def test_paused_items_of_a_map_are_approved_one_by_one(home, runner):
    run_id = f"mapped-pause-{runner}"
    thread, out = start(mapped_pause, runner, run_id)
    wait_for(lambda: item_paused(run_id, 1) and item_paused(run_id, 2), what="items 1 and 2 paused")
    with pytest.raises(rf.ApprovalError, match="field 'amount'"):
        rf.approve(run_id, "asks", {"amount": "x"}, map_index=1)
    rf.approve(run_id, "asks", {"amount": 5}, map_index=1)
    wait_for(lambda: not item_paused(run_id, 1), what="item 1 decided")
    assert item_paused(run_id, 2) and thread.is_alive()  # item 2 still waits, and the map with it
    approved = run_cli_in_process("approve", run_id, "asks", "--item", "2", "-p", "amount=7", home=home)
    assert approved.returncode == 0, approved.stderr
    thread.join(30)
    assert out and out[0].result() == [1, 25, 37]


def test_paused_items_read_paused_in_their_rows_counts_cli_and_pages_until_approved(home):
    """A map's items waiting for a decision read PAUSED with the pause's message (not RETRYING,
    though the engine holds them as retries due at no time): in the item rows, the map's counts
    (not done), ``rayflow show --items``, ``rayflow runs`` and the map and item pages."""
    from starlette.testclient import TestClient

    from rayflow.store.views import map_items
    from rayflow.ui import create_app

    run_id = "mapped-paused-rows"
    thread, out = start(mapped_pause, "local", run_id)
    store = RunStore()

    def rows() -> dict:
        return {r["item"]: (r["state"], r["message"], r["error_type"]) for r in store.items(run_id, "asks")}

    def counts() -> dict:
        return map_items([c for c in store.run(run_id)["chunks"] if c["task_key"] == "asks"])

    wait_for(lambda: len(rows()) == 2 and item_paused(run_id, 2) and counts()["total"] == 3, what="items 1 and 2 recorded")
    assert rows() == {1: ("PAUSED", "item 2", None), 2: ("PAUSED", "item 3", None)}
    assert counts()["states"] == {"PAUSED": 2, "SUCCESS": 1} and counts()["done"] == 1 and counts()["paused"] == 2
    shown = run_cli_in_process("show", run_id, "--items", "asks", home=home)
    assert "PAUSED" in shown.stdout and "item 3" in shown.stdout and "RETRYING" not in shown.stdout, shown.stdout
    runs = run_cli_in_process("runs", home=home)
    assert "2 waiting for approval" in runs.stdout, runs.stdout
    client = TestClient(create_app(home), base_url="http://127.0.0.1:4200")
    page = client.get(f"/runs/{run_id}/maps/asks")
    assert page.status_code == 200 and "PAUSED" in page.text and "item 3" in page.text
    item = client.get(f"/runs/{run_id}/maps/asks/items/2")
    assert 'id="item-state">PAUSED<' in item.text and "item 3" in item.text and "RETRYING" not in item.text
    rf.approve(run_id, "asks", {"amount": 1}, map_index=1)
    wait_for(lambda: rows().get(1, ("",))[0] == "SUCCESS", what="item 1 run again")
    assert counts()["states"] == {"PAUSED": 1, "SUCCESS": 2}
    rf.approve(run_id, "asks", {"amount": 2}, map_index=2)
    thread.join(30)
    assert out and out[0].result() == [1, 21, 32]
    assert counts()["states"] == {"SUCCESS": 3} and counts()["done"] == 3


def test_a_rejected_item_of_a_map_ends_failed_with_the_reason_and_each_paused_item_is_a_span(home, monkeypatch):
    from otlp_sink import HttpSink

    sink = HttpSink()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
    try:
        thread, out = start(mapped_pause, "local", "mapped-reject")
        wait_for(lambda: item_paused("mapped-reject", 1) and item_paused("mapped-reject", 2), what="items paused")
        rf.reject("mapped-reject", "asks", "no", map_index=1)
        rf.approve("mapped-reject", "asks", {"amount": 1}, map_index=2)
        thread.join(30)
        spans = sink.wait_for(lambda s: sum(x["name"].startswith("pause asks[") for x in s) == 2)
    finally:
        sink.close()
    items = RunStore().items("mapped-reject", "asks")
    failed = {i["item"]: i for i in items if i["state"] == "FAILED"}
    assert list(failed) == [1] and "rejected by" in failed[1]["message"] and "no" in failed[1]["message"], items
    pauses = {s["name"]: s for s in spans if s["name"].startswith("pause asks[")}
    (mapped,) = [s for s in spans if s["name"] == "task asks"]
    assert {s["parent_id"] for s in pauses.values()} == {mapped["span_id"]}  # under the map's span
    rejected, approved = pauses["pause asks[1]"]["attributes"], pauses["pause asks[2]"]["attributes"]
    assert rejected["rayflow.pause.message"] == "item 2" and "no" in rejected["rayflow.pause.outcome"]
    assert "rejected by" in rejected["rayflow.pause.outcome"] and rejected["rayflow.map_index"] == 1
    assert approved["rayflow.pause.message"] == "item 3" and approved["rayflow.pause.outcome"] == "approved"


def test_rf_pause_outside_a_task_says_where_it_belongs():
    with pytest.raises(RuntimeError, match="inside a task"):
        rf.pause("no task here")


KILLED_MAP = '''
import rayflow as rf


@rf.task(chunk_size=3)
def asks(x: int) -> int:
    if x > 1:
        rf.pause(f"item {x}")
        return x * 10
    return x


@rf.flow
def killed_map():
    return asks.map([1, 2, 3])
'''


def test_an_item_approved_after_the_driver_was_killed_resumes_the_map_and_the_other_item_waits_again(home, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from cli_runner import run_cli

    (tmp_path / "killed_map.py").write_text(KILLED_MAP)
    env = {**os.environ, "RAYFLOW_HOME": str(home)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "rayflow", "run", f"{tmp_path / 'killed_map.py'}:killed_map", "--local", "--run-id", "killed-map"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: item_paused("killed-map", 1) and item_paused("killed-map", 2) or driver.poll() is not None, 60)
        wait_for(lambda: RunStore().run("killed-map") is not None, what="the run's rows")
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait(30)
    done: list = []
    resumer = threading.Thread(target=lambda: done.append(run_cli("approve", "killed-map", "asks", "--item", "1", home=home)))
    resumer.start()  # the resumed run: item 1 runs with its approval, item 2 pauses again
    wait_for(lambda: RunStore().run("killed-map")["attempt"] == 2 and item_paused("killed-map", 2), what="item 2 waiting again")
    rf.approve("killed-map", "asks", map_index=2)
    resumer.join(60)
    assert done and done[0].returncode == 0 and "[1, 20, 30]" in done[0].stdout.replace("\n", " "), done
