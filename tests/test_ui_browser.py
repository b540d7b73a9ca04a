"""The web UI in a real headless browser: Debian's chromium and chromium-driver, driven by selenium.

`rayflow ui`'s app is served by uvicorn on a loopback port over a history
made by real runs; the browser opens the runs page, clicks into a failed
run, finds the graph's nodes with their states, opens a task's traceback,
sees a log record, and watches a live run end without reloading (htmx).
Then, against the UI of `rayflow serve --ui` with a token, a person signs in
through the login page (a wrong token first), and runs a flow now from the
Flows page's form (which carries its CSRF token).
Last, signed in through the login page with the token, every list page is
saved at 1280 and 1024 px wide in the light and the dark scheme, none wider
than the window (helpers in tests/ui_browser.py: sign_in, follow, journey,
screenshots).  Screenshots go to RAYFLOW_UI_SCREENSHOTS (default:
tests/artifacts/); the README's come from tests/test_ui_journey.py.
`.ci/run` installs chromium and chromium-driver with apt when missing: in CI
this test runs, it does not skip.
"""

from __future__ import annotations

import os
import pathlib
import threading
import time

import pytest
from ui_browser import CHROMEDRIVER, CHROMIUM, SHOTS, chromium, journey, save, screenshots, set_scheme, sign_in, wait_until
from waiting import wait_for

import rayflow as rf
from rayflow.store import RunStore
from rayflow.store.schedules import ScheduleStore

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


@rf.flow(runner="local")
def nightly_report(days: int = 7):
    return note.map(list(range(days)))


@rf.task
def scaled(x: int) -> int:
    return 10 * x


@rf.flow(runner="local")
def pipeline(n: int = 40):
    return crash_free_total(scaled.map(note.map(list(range(n)))))  # a fused chain, then a reduce


@rf.task
def crash_free_total(xs: list) -> int:
    return sum(xs)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from ui_http import uvicorn_server

    from rayflow.ui import create_app

    home = tmp_path_factory.mktemp("ui-browser")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(home))
        for days in (3, 5, 2, 7):
            nightly_report.run(days=days)
            demo.run(fail=False)
        failed = demo.run()
        fused = pipeline.run()
    every_6h = {"kind": "interval", "every": 21600.0, "anchor": "2020-01-01T00:00:00+00:00"}  # as `rayflow serve --interval` registers it
    schedules, now = ScheduleStore(RunStore(home)), time.time()
    schedules.register("nightly_report/6h", "nightly_report", "tests/test_ui_browser.py:nightly_report", every_6h, now)
    schedules.advance("nightly_report/6h", now, now - now % 21600 + 21600)
    with uvicorn_server(create_app(home)) as url:
        yield {"url": url, "home": home, "failed": failed, "fused": fused}


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:  # never a downloaded browser
        yield driver


def _shot(browser, name: str) -> None:
    save(browser, SHOTS / f"{name}.png")


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
    url = served["url"]
    visited = journey(browser, url + "/runs", [("journey-run", f'#runs a[href="/runs/{failed.run_id}"]')])
    assert visited == [url + "/runs", url + f"/runs/{failed.run_id}"]
    assert failed.run_id in browser.find_element(By.TAG_NAME, "h1").text
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


def test_the_runs_list_follows_a_live_run_without_a_reload(served, browser, tmp_path):
    """The list refreshes its table from /runs (the dashboard has /) while a run on it is live:
    its badge goes from RUNNING (live, pulsing) to SUCCESS in place."""
    from selenium.webdriver.common.by import By

    gate = tmp_path / "gate"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(served["home"]))
        thread = threading.Thread(target=lambda: live.with_options(run_id="live-list-1").run(path=str(gate)))
        thread.start()
        store = RunStore(served["home"])
        wait_for(lambda: (store.run("live-list-1") or {}).get("state") == "RUNNING", timeout=20)
        browser.get(served["url"] + "/runs?flow=live")
        table = browser.find_element(By.ID, "runs")
        assert table.get_attribute("hx-get").startswith("/runs?flow=live&")
        row = browser.find_element(By.XPATH, '//a[@href="/runs/live-list-1"]/ancestor::tr')
        assert row.find_element(By.CSS_SELECTOR, ".badge.live").text == "RUNNING"
        _shot(browser, "runs-live")
        browser.execute_script("window.__not_reloaded = true;")
        gate.write_text("")
        thread.join(30)

    def settled() -> bool:
        rows = browser.find_elements(By.XPATH, '//a[@href="/runs/live-list-1"]/ancestor::tr//span[contains(@class, "badge")]')
        return bool(rows) and rows[0].text == "SUCCESS" and "ok" in rows[0].get_attribute("class")

    wait_until(settled, 20, "the badge of live-list-1 to read SUCCESS")  # a row swapped out meanwhile is looked up again
    assert browser.execute_script("return window.__not_reloaded === true;")  # htmx swapped the table in place


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


def test_a_person_signs_in_with_the_token_and_runs_a_flow_now(served_with_token, browser):
    from selenium.webdriver.common.by import By

    url = served_with_token["url"]
    browser.delete_all_cookies()
    browser.get(url + "/flows")
    form = browser.find_element(By.ID, "login")  # the page asked for is the login page until signed in
    assert "rayflow" in form.find_element(By.TAG_NAME, "h1").text
    _shot(browser, "login")
    set_scheme(browser, "dark")
    _shot(browser, "login-dark")
    set_scheme(browser, "light")
    field = browser.find_element(By.ID, "token")
    field.send_keys("not the token at all")
    field.submit()
    wait_for(lambda: _text(browser, "login-error"), timeout=20)
    assert "not this UI" in _text(browser, "login-error")
    assert browser.find_element(By.ID, "login-error").value_of_css_property("color") == "rgba(180, 35, 24, 1)"  # --failed
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
    assert screenshots(browser, url, [("flows-run-now", "/flows")]) == {}  # the run-now form, light and dark
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


def test_signed_in_with_the_token_every_page_reads_in_light_and_dark_from_1024_px(served, browser):
    """The login page, typed into, then each page at 1280 and 1024 px, light and dark: saved as
    screenshots, and none wider than the window.  (The README's screenshots come from
    tests/test_ui_journey.py: RAYFLOW_UI_SCREENSHOTS_DOCS=1 refreshes them.)"""
    from selenium.webdriver.common.by import By
    from ui_http import uvicorn_server

    from rayflow.ui import create_app

    failed = served["failed"].run_id
    with uvicorn_server(create_app(served["home"], token=UI_TOKEN)) as url:
        browser.delete_all_cookies()
        assert screenshots(browser, url, [("login", "/runs")]) == {}
        sign_in(browser, url, UI_TOKEN, "/runs")
        assert browser.current_url == url + "/runs" and browser.find_element(By.ID, "logout")
        current = browser.find_element(By.CSS_SELECTOR, '.topbar a[aria-current="page"]')
        assert current.text == "Runs"
        badge = browser.find_element(By.CSS_SELECTOR, "#runs .badge.failed")
        assert badge.text == "FAILED" and badge.value_of_css_property("background-color") == "rgba(242, 139, 130, 1)"  # #f28b82
        pages = [("runs", "/runs"), ("flows", "/flows"), ("run", f"/runs/{failed}"), ("run-fused", f"/runs/{served['fused'].run_id}"),
                 ("filtered", "/runs?state=FAILED"), ("missing", "/runs/no-such-run"), ("error", "/runs?page=x")]
        assert screenshots(browser, url, pages) == {}
        browser.get(url + f"/runs/{served['fused'].run_id}")  # a fused chain: a thick edge and its key
        assert len(browser.find_elements(By.CSS_SELECTOR, "svg.graph path.edge.fused")) == 1
        assert browser.find_element(By.CSS_SELECTOR, ".legend .fused-chain").text == "fused: note → scaled"
        set_scheme(browser, "dark")
        browser.get(url + "/runs")
        background = browser.find_element(By.TAG_NAME, "body").value_of_css_property("background-color")
        set_scheme(browser, "light")
        assert background == "rgba(14, 17, 22, 1)"  # the dark scheme's --bg, #0e1116
        for name, _ in [("login", ""), *pages]:
            for width in (1280, 1024):
                for scheme in ("light", "dark"):
                    assert (SHOTS / f"{name}-{width}-{scheme}.png").stat().st_size > 5000
