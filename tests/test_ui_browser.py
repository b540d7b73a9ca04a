"""The web UI in a real headless browser: Debian's chromium and chromium-driver, driven by selenium.

`rayflow ui`'s app is served by uvicorn on a loopback port over a history
made by real runs; the browser opens the runs page, clicks into a failed
run, finds the graph's nodes with their states, opens a task's traceback,
sees a log record, and watches a live run end without reloading (htmx).
Screenshots go to RAYFLOW_UI_SCREENSHOTS (default: tests/artifacts/).
`.ci/run` installs chromium and chromium-driver with apt when missing: in CI
this test runs, it does not skip.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import threading
import time

import pytest
from waiting import wait_for

import rayflow as rf
from rayflow.store import RunStore

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = pathlib.Path(os.environ.get("RAYFLOW_UI_SCREENSHOTS") or pathlib.Path(__file__).parent / "artifacts")

pytestmark = pytest.mark.skipif(
    not (CHROMEDRIVER and CHROMIUM) and not os.environ.get("CI"),
    reason="chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
)


@rf.task
def crash() -> int:
    raise ZeroDivisionError("the denominator was zero")


@rf.task
def note(x: int) -> int:
    rf.get_run_logger().info("noted item %d", x)
    return x


@rf.task
def linger(path: str) -> str:
    gate = pathlib.Path(path)
    deadline = time.time() + 60
    while not gate.exists() and time.time() < deadline:
        time.sleep(0.05)
    return "done"


@rf.flow(runner="local")
def demo(fail: bool = True):
    values = note.map([1, 2, 3])
    return {"values": values, "crash": crash() if fail else None}


@rf.flow(runner="local")
def live(path: str):
    return linger(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import uvicorn

    from rayflow.ui import create_app

    home = tmp_path_factory.mktemp("ui-browser")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(home))
        failed = demo.run()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(home), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "home": home, "failed": failed}
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # never a downloaded browser
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _shot(browser, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _text(browser, element_id: str) -> str:
    """An element's text, read again if htmx swapped it out between the find and the read."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return browser.find_element(By.ID, element_id).text
    except (StaleElementReferenceException, NoSuchElementException):
        return ""



def test_a_person_finds_what_failed_and_why(served, browser):
    from selenium.webdriver.common.by import By

    failed = served["failed"]
    browser.get(served["url"] + "/")
    assert "Runs" in browser.find_element(By.TAG_NAME, "h1").text
    _shot(browser, "runs")
    browser.find_element(By.LINK_TEXT, failed.run_id).click()
    wait_for(lambda: failed.run_id in browser.find_element(By.TAG_NAME, "h1").text, timeout=20)
    nodes = {n.get_attribute("data-key"): n.get_attribute("data-state") for n in browser.find_elements(By.CSS_SELECTOR, "g.node")}
    assert nodes["crash"] == "FAILED" and nodes["note"] == "MAPPED"
    details = browser.find_element(By.CSS_SELECTOR, "details")
    details.find_element(By.TAG_NAME, "summary").click()
    traceback = details.find_element(By.TAG_NAME, "pre")
    assert traceback.is_displayed() and "ZeroDivisionError" in traceback.text
    assert "noted item 2" in browser.find_element(By.ID, "logs").text
    _shot(browser, "run")


def test_a_live_run_changes_state_on_the_page_without_a_reload(served, browser, tmp_path):
    from selenium.webdriver.common.by import By

    gate = tmp_path / "gate"
    outcome = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(served["home"]))
        thread = threading.Thread(target=lambda: outcome.setdefault("run", live.with_options(run_id="live-ui-1").run(path=str(gate))))
        thread.start()
        store = RunStore(served["home"])
        wait_for(lambda: (store.run("live-ui-1") or {}).get("state") == "RUNNING", timeout=20)
        browser.get(served["url"] + "/runs/live-ui-1")
        state = browser.find_element(By.ID, "run-state")
        assert state.text == "RUNNING"
        marker = browser.execute_script("window.__not_reloaded = true; return window.__not_reloaded;")
        assert marker
        gate.write_text("")
        thread.join(30)
    wait_for(lambda: _text(browser, "run-state") == "SUCCESS", timeout=20)
    assert browser.execute_script("return window.__not_reloaded === true;")  # htmx swapped it in place
    _shot(browser, "live")
