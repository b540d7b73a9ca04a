"""The run page's approve form in a real headless browser: a live run (in-process runner, in a
thread of this test) pauses in ``rf.pause(wait_for_input=Sign)``; signed in with the token, a
person sees the task waiting with a form built from the model, types a bad amount (refused,
the field named, the task still paused), then a good one, and the run ends with it.  The page
is saved light and dark (``approve-light.png``, ``approve-dark.png`` under
RAYFLOW_UI_SCREENSHOTS)."""

from __future__ import annotations

import threading

import pydantic
import pytest
from ui_browser import chromium, go, shoot_both, sign_in, wait_css, wait_until
from waiting import wait_for

import rayflow as rf
from rayflow.store import RunStore

TOKEN = "approve-t0ken-31c9a7"


class Sign(pydantic.BaseModel):
    amount: int
    note: str = ""


@rf.task
def pay() -> int:
    got = rf.pause("sign the payment", wait_for_input=Sign)
    return got.amount + 1


@rf.flow(runner="local")
def payment():
    return pay()


def test_a_paused_task_is_approved_from_the_run_page_after_a_refused_input(tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from ui_http import uvicorn_server

    from rayflow.ui import create_app

    home = tmp_path / "home"
    monkeypatch.setenv("RAYFLOW_HOME", str(home))
    out: list = []
    thread = threading.Thread(target=lambda: out.append(payment.with_options(run_id="ui-approve").run()), daemon=True)
    thread.start()
    store = RunStore(home)
    wait_for(lambda: any(t["state"] == "PAUSED" for t in (store.run("ui-approve") or {}).get("transitions", ())), what="PAUSED")
    with uvicorn_server(create_app(home, token=TOKEN)) as url, chromium() as browser:
        sign_in(browser, url, TOKEN, "/runs/ui-approve")
        form = wait_css(browser, "#pause-pay form.approve-form")
        assert "sign the payment" in browser.find_element(By.ID, "pause-pay").text
        shoot_both(browser, "approve")
        form.find_element(By.NAME, "input.amount").send_keys("lots")
        shown = browser.find_element(By.ID, "run-cards").text
        wait_until(lambda: browser.find_element(By.ID, "run-cards").text != shown, what="the page's refresh")
        form = wait_css(browser, "#pause-pay form.approve-form")  # what the person typed survives the refresh
        assert form.find_element(By.NAME, "input.amount").get_attribute("value") == "lots"
        form.find_element(By.CSS_SELECTOR, "button.approve").click()
        wait_until(lambda: "field 'amount'" in browser.page_source, what="the refusal naming the field")
        go(browser, url + "/runs/ui-approve")
        form = wait_css(browser, "#pause-pay form.approve-form")  # still paused
        form.find_element(By.NAME, "input.amount").send_keys("41")
        form.find_element(By.CSS_SELECTOR, "button.approve").click()
        thread.join(30)
        assert out and out[0].result() == 42
        go(browser, url + "/runs/ui-approve")
        assert not browser.find_elements(By.ID, "pauses")
    pause = store.run("ui-approve")
    logs = [line["message"] for line in store.log_page("ui-approve", limit=50)]
    assert any("approved by ui" in m for m in logs), logs
    assert pause["state"] == "SUCCESS"


@pytest.fixture(autouse=True)
def _no_results_env(monkeypatch):
    monkeypatch.delenv("RAYFLOW_RESULTS", raising=False)


def test_a_read_only_ui_refuses_a_decision(tmp_path):
    """``rayflow ui`` without a token (and not ``serve --ui``) shows pauses but takes no decision."""
    from starlette.testclient import TestClient

    from rayflow.ui import create_app

    client = TestClient(create_app(tmp_path / "home"), base_url="http://127.0.0.1:4200", follow_redirects=False)
    refused = client.post("/runs/any-run/approve", data={"task": "pay"})
    assert refused.status_code == 403 and "read-only" in refused.text
