"""The web UI in a real headless browser: Debian's chromium and chromium-driver, driven by selenium.

`rayflow ui`'s app is served by uvicorn on a loopback port over a history
made by real runs; the browser opens the runs page, clicks into a failed
run, finds the graph's nodes with their states, opens a task's traceback,
sees a log record, and watches a live run end without reloading (htmx).
Then, against the UI of `rayflow serve --ui` with a token, a person signs in
through the login page (a wrong token first), and runs a flow now from the
Flows page's form (which carries its CSRF token).
Screenshots go to RAYFLOW_UI_SCREENSHOTS (default: tests/artifacts/), the
login page in the light and the dark colour scheme.
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
    browser.get(served["url"] + "/runs")
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


UI_TOKEN = "browser-t0ken-8d2f6a1c4e"


@rf.flow(runner="local")
def hello(name: str = "world") -> int:
    return note(len(name))


@pytest.fixture(scope="module")
def served_with_token(tmp_path_factory):
    """The UI of `rayflow serve --ui` (actions on `hello`) with a token, on a loopback port."""
    from ui_http import uvicorn_server

    from rayflow.ui import create_app
    from rayflow.ui.actions import ServeActions

    home = tmp_path_factory.mktemp("ui-browser-token")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(home))  # where run now records its runs
        with uvicorn_server(create_app(home, ServeActions([hello]), token=UI_TOKEN)) as url:
            yield {"url": url, "home": home}


def _dark(browser, on: bool) -> None:
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark" if on else "light"}]},
    )


def test_a_person_signs_in_with_the_token_and_runs_a_flow_now(served_with_token, browser):
    from selenium.webdriver.common.by import By

    url = served_with_token["url"]
    browser.delete_all_cookies()
    browser.get(url + "/flows")
    form = browser.find_element(By.ID, "login")  # the page asked for is the login page until signed in
    assert "rayflow" in form.find_element(By.TAG_NAME, "h1").text
    _shot(browser, "login")
    _dark(browser, True)
    _shot(browser, "login-dark")
    _dark(browser, False)
    field = browser.find_element(By.ID, "token")
    field.send_keys("not the token at all")
    field.submit()
    wait_for(lambda: _text(browser, "login-error"), timeout=20)
    assert "not this UI" in _text(browser, "login-error")
    _shot(browser, "login-wrong")
    field = browser.find_element(By.ID, "token")
    field.send_keys(UI_TOKEN)
    field.submit()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, 'form.run-now[data-flow="hello"]'), timeout=20)
    assert browser.current_url == url + "/flows"  # back to the page asked for
    cookies = {c["name"]: c for c in browser.get_cookies()}
    session = next(c for name, c in cookies.items() if name.startswith("rayflow_session_"))
    assert session["httpOnly"] and session["sameSite"] == "Lax" and UI_TOKEN not in session["value"]
    assert UI_TOKEN not in browser.page_source
    run_now = browser.find_element(By.CSS_SELECTOR, 'form.run-now[data-flow="hello"]')
    name = run_now.find_element(By.NAME, "name")  # its default, "world", filled in
    name.clear()
    name.send_keys("ada")
    run_now.find_element(By.TAG_NAME, "button").click()
    wait_for(lambda: "/runs/" in browser.current_url, timeout=20)
    wait_for(lambda: _text(browser, "run-state") == "SUCCESS", timeout=30)
    run_id = browser.current_url.rsplit("/", 1)[1]
    assert RunStore(served_with_token["home"]).run(run_id)["params"] == {"name": "ada"}
    _shot(browser, "run-now")
    browser.find_element(By.ID, "logout").click()
    wait_for(lambda: browser.find_elements(By.ID, "login"), timeout=20)
