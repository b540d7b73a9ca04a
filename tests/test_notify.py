"""rf.notify.webhook / slack / email as state handlers, delivered to real servers on 127.0.0.1:
the fields and formats, no secret in any payload, and a dead or hanging endpoint that never
holds a run (its failure a warning in the run's logs)."""

from __future__ import annotations

import json
import time

import pytest
from pydantic import SecretStr

import rayflow as rf
from notify_servers import dead_port, http_server, smtp_server
from rayflow.exceptions import DefinitionError
from rayflow.notify import sender
from rayflow.store import RunStore
from waiting import wait_for

SECRET = "s3cr3t-do-not-send"


@pytest.fixture(scope="module")
def web():
    server = http_server()
    yield server
    server.release.set()
    server.shutdown()


@pytest.fixture(scope="module")
def smtp():
    controller, mailbox = smtp_server()
    yield controller.port, mailbox
    controller.stop()


def _failing_flow(notifiers, flow_notifiers=()):
    @rf.task(on_failure=notifiers)
    def charge(token: SecretStr, canary: str) -> int:
        raise ValueError(f"card declined for {canary} (token {token})")

    @rf.flow(on_state=list(flow_notifiers))
    def billing(token: SecretStr, canary: str = "canary-42"):
        return charge(token, canary)

    return billing


def test_webhook_and_slack_name_the_run_and_never_a_secret(runner, web, monkeypatch):
    monkeypatch.setenv("RAYFLOW_UI_URL", "http://ui.example:8080/")
    path = f"/{runner}"
    flow = _failing_flow(
        [rf.notify.webhook(web.url + path + "/hook", headers={"X-Team": "data"}), rf.notify.slack(web.url + path + "/slack")],
        [rf.notify.webhook(web.url + path + "/flow", states=["SUCCESS", "FAILED"])],
    )
    run = flow.with_options(runner=runner).run(token=SecretStr(SECRET))
    assert run.state.is_failed()
    wait_for(lambda: len([r for r in web.received if r["path"].startswith(path)]) >= 3, 10, "three notifications")
    [hook] = web.bodies(path + "/hook")
    assert {k: hook[k] for k in ("kind", "flow", "run_id", "task", "state")} == {
        "kind": "state", "flow": "billing", "run_id": run.run_id, "task": "charge", "state": "FAILED"}
    assert "ValueError" in hook["error"] and "canary-42" in hook["error"]  # the error is there...
    assert hook["url"] == f"http://ui.example:8080/runs/{run.run_id}"
    [request] = [r for r in web.received if r["path"] == path + "/hook"]
    assert request["headers"]["X-Team"] == "data"
    [slack] = web.bodies(path + "/slack")
    assert set(slack) == {"text", "blocks"} and "charge" in slack["text"] and "FAILED" in slack["text"]
    assert all(block["type"] == "section" for block in slack["blocks"])
    assert f"<http://ui.example:8080/runs/{run.run_id}|Open the run>" in json.dumps(slack["blocks"])
    [flow_event] = web.bodies(path + "/flow")  # states= on the flow: its end, not its RUNNING
    assert flow_event["task"] is None and flow_event["state"] == "FAILED"
    for r in web.received:  # ...and the secret never is
        assert SECRET.encode() not in r["raw"]
    # latency: the state's change to the request's arrival at the server
    state_at = run.task_states["charge"].timestamp
    print(f"\nnotification latency ({runner}): {1000 * (request['at'] - state_at):.1f} ms")
    assert request["at"] - state_at < 5


def test_email_over_a_real_smtp_server(smtp, monkeypatch):
    port, mailbox = smtp
    notifier = rf.notify.email(["ops@example.com", "me@example.com"], smtp_host="127.0.0.1", smtp_port=port,
                               sender="rayflow@example.com", password=SecretStr("smtp-pass"), ui_url="http://ui")
    run = _failing_flow([notifier]).with_options(runner="local").run(token=SecretStr(SECRET))
    wait_for(lambda: mailbox.messages, 10, "the mail")
    [(_, sender_address, recipients, content)] = mailbox.messages
    assert sender_address == "rayflow@example.com" and recipients == ["ops@example.com", "me@example.com"]
    text = content.decode()
    assert f"Subject: rayflow: task charge of flow billing (run {run.run_id}) is FAILED" in text
    assert f"Run: http://ui/runs/{run.run_id}" in text and "canary-42" in text
    assert SECRET not in text and "smtp-pass" not in repr(notifier)


def test_a_dead_or_hanging_endpoint_never_holds_the_run(web, monkeypatch):
    monkeypatch.setattr(sender, "FLUSH_SECONDS", 0.3)
    monkeypatch.setattr(sender, "BACKOFF_SECONDS", 0.01)
    dead = f"http://127.0.0.1:{dead_port()}/x"
    flow = _failing_flow([rf.notify.webhook(dead, retries=1), rf.notify.webhook(web.url + "/hang", timeout=30)])
    started = time.monotonic()
    run = flow.with_options(runner="local").run(token=SecretStr(SECRET))
    took = time.monotonic() - started
    assert run.state.is_failed() and took < 3, took  # the hanging endpoint holds it FLUSH_SECONDS at most
    assert any(r["path"] == "/hang" for r in web.received)  # it was reached, and never answered
    warnings = [r["message"] for r in RunStore().logs(run.run_id) if r["level"] == "WARNING"]
    port = dead.split(":")[2].split("/")[0]
    assert any(f"notification failed (webhook to http://127.0.0.1:{port}) after 2 attempts" in w
               and "Connection refused" in w for w in warnings), warnings
    assert any("not delivered by the run's end (webhook to " in w for w in warnings), warnings


def test_a_server_error_is_retried_then_a_warning(web, monkeypatch):
    monkeypatch.setattr(sender, "BACKOFF_SECONDS", 0.01)
    run = _failing_flow([rf.notify.webhook(web.url + "/fail", retries=2)]).with_options(runner="local").run(
        token=SecretStr(SECRET))
    assert len(web.bodies("/fail")) == 3  # delivered within the run's end flush
    warnings = [r["message"] for r in RunStore().logs(run.run_id, task="charge") if r["level"] == "WARNING"]
    assert any("after 3 attempts: HTTPError: HTTP Error 500" in w for w in warnings), warnings


@pytest.mark.parametrize(("make", "error"), [
    (lambda: rf.notify.webhook("ftp://host/x"), "rf.notify.webhook: the URL must be http:// or https:// with a host, got scheme 'ftp'"),
    (lambda: rf.notify.slack("hooks.slack.com/services/T0"), "rf.notify.slack: the URL must be http:// or https://"),
    (lambda: rf.notify.email([]), "rf.notify.email: to= needs at least one address like name@host, got none"),
    (lambda: rf.notify.email("nobody"), "rf.notify.email: to= needs at least one address like name@host, got ['nobody']"),
    (lambda: rf.notify.email("a@b", smtp_port=0), "rf.notify.email: smtp_port must be a port from 1 to 65535"),
    (lambda: rf.notify.webhook("http://h", states=["DONE"]), "rf.notify.webhook: unknown state 'DONE' in states="),
    (lambda: rf.notify.webhook("http://h", timeout=0), "rf.notify.webhook: timeout must be a number of seconds > 0"),
])
def test_bad_arguments_are_refused_where_the_notifier_is_made(make, error):
    with pytest.raises(DefinitionError) as caught:
        make()
    assert str(caught.value).startswith(error) and "\n" not in str(caught.value)
