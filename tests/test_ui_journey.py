"""A person's way through the web UI in a real headless browser (Debian's chromium and
chromium-driver, by selenium), over a history made by real runs (in-process runner): a flow
whose map has items failing with three error types, a failed run, a run whose task records
artifacts of every kind (a keyed markdown, a table), a schedule; served by uvicorn with a login
token.

The browser signs in through the login page with the token, then goes dashboard → a bar's
FAILED part → the runs it lists (as many as the part counts) → the failed run → its map → a
failed item → its traceback; checks that the chart's bars add up to the history's counts (read
with sqlite3); opens the run's artifacts (loaded by htmx) and an artifact's page; the flow's page
and a failed task's page.  Every page is saved light and dark at 1280 px (the dashboard and the
run at 1024 px too) as ``journey/NAME-WIDTH-SCHEME.png`` under RAYFLOW_UI_SCREENSHOTS (default
tests/artifacts/), and none is wider than the window.  ``RAYFLOW_UI_SCREENSHOTS_DOCS=1`` copies
the README's set (README_SET, light and dark) into docs/screenshots/ (through pngquant when it is
installed).  One browser for the module; every wait has a deadline, none is a sleep.
"""

from __future__ import annotations

import math
import os
import pathlib
import shutil
import sqlite3
import subprocess
import time

import pytest
from artifact_flows import tiny_png
from ui_browser import (
    CHROMEDRIVER, CHROMIUM, SCHEMES, SHOTS, chromium, follow, go, save, set_scheme, set_width, sideways, sign_in,
    wait_css, wait_until,
)

import rayflow as rf
from rayflow.store import RunStore
from rayflow.store.schedules import ScheduleStore

pytestmark = pytest.mark.skipif(
    not (CHROMEDRIVER and CHROMIUM) and not os.environ.get("CI"),
    reason="chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
)

TOKEN = "journey-t0ken-5b7e19c2"
DOCS = pathlib.Path(__file__).parent.parent / "docs" / "screenshots"
README_SET = {(name, 1280) for name in ("login", "dashboard", "runs", "flow", "run", "map", "item", "task", "artifact")}
README_SET |= {("dashboard", 1024), ("run", 1024)}
HEIGHT = 900  # the viewport's height in the screenshots


@rf.task
def check(x: int) -> int:
    if x % 7 == 3:
        raise ValueError(f"row {x}: amount is negative")
    if x % 11 == 5:
        raise KeyError(f"customer_{x}")
    if x == 20:
        raise ZeroDivisionError("no orders to average")
    time.sleep(0.002 * x)  # a throughput chart with something to show
    return x


@rf.task
def report(size: int) -> int:
    rf.artifacts.markdown(
        f"# Nightly ETL report\n\nChecked **{size}** rows.\n\n| step | rows |\n|---|---|\n| loaded | {size} |", key="etl-report",
    )
    rf.artifacts.table([{"region": "north", "sales": 1200}, {"region": "south", "sales": 950.5}], key="sales-by-region")
    rf.artifacts.link("https://example.com/etl", text="the source data")
    rf.artifacts.image(tiny_png(12, 8), key="etl-chart")
    rf.artifacts.progress(1.0, key="etl-progress")
    return size


@rf.task
def upload(target: str) -> str:
    raise ConnectionError(f"could not reach {target}")


@rf.flow(runner="local")
def nightly_etl(size: int = 24, strict: bool = True):
    mapper = check.with_options(chunk_size=4) if strict else check.with_options(chunk_size=4, min_success_ratio=0.5)
    return {"rows": mapper.map(list(range(size))), "report": report(size)}


@rf.flow(runner="local")
def publish(target: str = "warehouse.internal"):
    return upload(target)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from ui_http import uvicorn_server

    from rayflow.ui import create_app

    home = tmp_path_factory.mktemp("ui-journey")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(home))
        mp.delenv("RAYFLOW_RESULTS", raising=False)
        for size in (12, 16):
            nightly_etl.run(size=size, strict=False)
        publish.run()
        failed = nightly_etl.run()  # the last run: its map fails (ValueError, KeyError, ZeroDivisionError items)
    assert failed.state.type.value == "FAILED"
    every_6h = {"kind": "interval", "every": 21600.0, "anchor": "2020-01-01T00:00:00+00:00"}
    schedules, now = ScheduleStore(RunStore(home)), time.time()
    schedules.register("nightly_etl/6h", "nightly_etl", "tests/test_ui_journey.py:nightly_etl", every_6h, now)
    schedules.advance("nightly_etl/6h", now, now - now % 21600 + 21600)
    with uvicorn_server(create_app(home, token=TOKEN)) as url:
        yield {"url": url, "home": home, "failed": failed.run_id}


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:  # never a downloaded browser
        yield driver


@pytest.fixture
def too_wide():
    """The pages wider than the window (pixels, by screenshot name): each test ends checking it is empty."""
    return {}


@pytest.fixture(scope="module")
def signed_in(served, browser):
    """Signed in through the login page, typing the token (the login page saved first)."""
    browser.delete_all_cookies()
    go(browser, served["url"] + "/")
    wait_css(browser, "form#login input#token")
    too_wide: dict[str, int] = {}
    shots(browser, "login", too_wide)
    assert too_wide == {}
    sign_in(browser, served["url"], TOKEN, "/")
    assert browser.current_url == served["url"] + "/"
    assert wait_css(browser, "#logout") and TOKEN not in browser.page_source
    return served


def shots(browser, name: str, too_wide: dict[str, int], widths: tuple[int, ...] = (1280,)) -> None:
    """The page as it is, at each width, light and dark: ``NAME-WIDTH-SCHEME.png`` under SHOTS (and
    the README's set into docs/screenshots/ with RAYFLOW_UI_SCREENSHOTS_DOCS=1)."""
    browser.execute_script("window.scrollTo(0, 0)")  # the top of the page, where a person starts reading
    try:
        for width in widths:
            set_width(browser, width, HEIGHT)
            wait_until(lambda: browser.execute_script("return window.innerWidth") == width, 10, f"a {width} px window")
            if (extra := sideways(browser)) > 0:
                too_wide[f"{name}-{width}"] = extra
            for scheme in SCHEMES:
                set_scheme(browser, scheme)
                path = save(browser, SHOTS / "journey" / f"{name}-{width}-{scheme}.png")
                assert path.stat().st_size > 5000
                if os.environ.get("RAYFLOW_UI_SCREENSHOTS_DOCS") and (name, width) in README_SET:
                    to_docs(path)
    finally:
        set_width(browser, 1280, HEIGHT)
        set_scheme(browser, "light")


def to_docs(path: pathlib.Path) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    target = DOCS / path.name
    if shutil.which("pngquant"):  # a quarter of the size, no visible change
        done = subprocess.run(["pngquant", "--force", "--quality", "60-90", "--output", str(target), str(path)], check=False)
        if done.returncode == 0:
            return
    shutil.copyfile(path, target)


def history_counts(home: pathlib.Path, since: float) -> dict[str, int]:
    """Runs started since ``since`` by state, read from the history file itself."""
    with sqlite3.connect(home / "history.db") as db:
        return dict(db.execute("SELECT state, count(*) FROM runs WHERE started_at >= ? GROUP BY state", (since,)).fetchall())


def test_the_dashboards_bars_add_up_to_the_historys_counts(signed_in, browser, too_wide):
    from selenium.webdriver.common.by import By

    go(browser, signed_in["url"] + "/")
    wait_css(browser, "#runs-chart svg.bars")
    since = math.floor(time.time() / 3600) * 3600 - 23 * 3600  # the 24 h range's first hour
    parts = browser.find_elements(By.CSS_SELECTOR, "#runs-chart rect[data-state]")
    by_state: dict[str, int] = {}
    for part in parts:
        state = part.get_attribute("data-state")
        by_state[state] = by_state.get(state, 0) + int(part.get_attribute("data-count"))
    expected = history_counts(signed_in["home"], since)
    assert by_state == expected and expected == {"SUCCESS": 2, "FAILED": 2}
    total = browser.find_element(By.CSS_SELECTOR, '#counts .num[data-state="ALL"]').text
    assert int(total.replace(",", "")) == sum(expected.values())
    buckets = browser.find_elements(By.CSS_SELECTOR, "#runs-chart rect.bucket")
    assert sum(int(b.get_attribute("data-total")) for b in buckets) == sum(expected.values())
    assert "nightly_etl" in browser.find_element(By.ID, "upcoming").text  # the schedule's next fire
    shots(browser, "dashboard", too_wide, (1280, 1024))
    assert too_wide == {}


def test_from_a_bar_to_a_failed_items_traceback(signed_in, browser, too_wide):
    """dashboard → the latest bar's FAILED part → its runs → the failed run → its map → a failed
    item (KeyError) → its traceback."""
    from selenium.webdriver.common.by import By

    url, failed = signed_in["url"], signed_in["failed"]
    go(browser, url + "/")
    wait_css(browser, "#runs-chart rect[data-state]")
    part = browser.find_elements(By.CSS_SELECTOR, '#runs-chart rect[data-state="FAILED"]')[-1]  # the latest hour's
    count, bucket = int(part.get_attribute("data-count")), part.get_attribute("data-bucket")
    assert bucket.isdigit()
    part.click()
    wait_until(lambda: "/runs?" in browser.current_url and browser.find_elements(By.ID, "runs"), 20, "the bar's runs")
    assert "state=FAILED" in browser.current_url and "from=" in browser.current_url
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    assert len(rows) == count and all(r.find_element(By.CSS_SELECTOR, ".badge").text == "FAILED" for r in rows)
    shots(browser, "runs", too_wide)

    follow(browser, f'#runs a[href="/runs/{failed}"]')
    assert failed in browser.find_element(By.TAG_NAME, "h1").text
    assert wait_css(browser, "#run-state").text == "FAILED"
    nodes = {n.get_attribute("data-key"): n.get_attribute("data-state") for n in browser.find_elements(By.CSS_SELECTOR, "g.node")}
    assert nodes["check"] in ("FAILED", "MAPPED") and nodes["report"] == "SUCCESS"
    map_node = browser.find_element(By.CSS_SELECTOR, 'g.node[data-key="check"] a')
    assert map_node.get_dom_attribute("href") == f"/runs/{failed}/maps/check"  # the graph's map node leads there too
    shots(browser, "run", too_wide, (1280, 1024))

    follow(browser, '#tasks a[href$="/maps/check"]')
    assert browser.current_url == url + f"/runs/{failed}/maps/check"
    counts = {c.get_attribute("data-state"): c.find_element(By.CSS_SELECTOR, ".num").text
              for c in browser.find_elements(By.CSS_SELECTOR, "#item-counts .card[data-state]")}
    assert counts["FAILED"] == "6"  # 3, 10, 17 (ValueError), 5, 16 (KeyError), 20 (ZeroDivisionError)
    types = ("ValueError", "KeyError", "ZeroDivisionError")  # the messages name none of them
    errors = {r.get_attribute("data-item"): [t for t in types if t in r.text]
              for r in browser.find_elements(By.CSS_SELECTOR, "#item-rows tr[data-item]")}
    assert errors == {"3": ["ValueError"], "5": ["KeyError"], "10": ["ValueError"], "16": ["KeyError"],
                      "17": ["ValueError"], "20": ["ZeroDivisionError"]}
    row = browser.find_element(By.CSS_SELECTOR, '#item-rows tr[data-item="16"]')
    row.find_element(By.TAG_NAME, "summary").click()  # the row's traceback opens in place
    traceback = row.find_element(By.CSS_SELECTOR, "details pre")
    wait_until(traceback.is_displayed, 10, "the item's traceback to open")
    assert "KeyError: 'customer_16'" in traceback.text and "raise KeyError" in traceback.text
    shots(browser, "map", too_wide)

    follow(browser, f'#item-rows a[href="/runs/{failed}/maps/check/items/16"]')
    assert wait_css(browser, "#item-state").text == "FAILED"
    assert "KeyError: 'customer_16'" in browser.find_element(By.ID, "item-traceback").text
    shots(browser, "item", too_wide)
    assert too_wide == {}


def test_a_runs_artifacts_and_an_artifacts_page(signed_in, browser, too_wide):
    """The run page's artifacts (htmx), then /artifacts → a key → its page (markdown rendered)."""
    from selenium.webdriver.common.by import By

    url, failed = signed_in["url"], signed_in["failed"]
    go(browser, url + f"/runs/{failed}")
    section = wait_css(browser, "#artifacts-run .artifact-entry").find_element(By.XPATH, "..")  # loaded by htmx
    cells = [td.text for td in section.find_elements(By.CSS_SELECTOR, ".artifact-table td")]
    assert "north" in cells and "1200" in cells
    assert section.find_element(By.CSS_SELECTOR, ".artifact-markdown :is(h1, h2, h3, h4)").text == "Nightly ETL report"
    assert section.find_element(By.CSS_SELECTOR, 'img.artifact-image').get_attribute("naturalWidth") == "12"

    go(browser, url + "/artifacts")
    keys = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#artifacts tbody a[href^='/artifacts/']")]
    assert {"etl-report", "sales-by-region", "etl-chart", "etl-progress"} <= set(keys)
    follow(browser, '#artifacts a[href="/artifacts/etl-report"]')
    assert browser.find_element(By.CSS_SELECTOR, ".artifact-markdown :is(h1, h2, h3, h4)").text == "Nightly ETL report"
    markdown_cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, ".artifact-markdown td")]
    assert markdown_cells == ["loaded", "24"]
    versions = browser.find_elements(By.CSS_SELECTOR, "#versions tbody tr")
    assert len(versions) == 3  # one per run of nightly_etl
    shots(browser, "artifact", too_wide)
    assert too_wide == {}


def test_the_flows_page_and_a_failed_tasks_page(signed_in, browser, too_wide):
    from selenium.webdriver.common.by import By

    url, failed = signed_in["url"], signed_in["failed"]
    go(browser, url + f"/runs/{failed}")
    follow(browser, '.crumbs a[href="/flows/nightly_etl"]')
    runs = browser.find_elements(By.CSS_SELECTOR, "#grid rect[data-run]:not([data-task])")
    assert [r.get_attribute("data-state") for r in runs] == ["SUCCESS", "SUCCESS", "FAILED"]  # oldest to newest
    cells = {r.get_attribute("data-task"): r.get_attribute("data-state")
             for r in browser.find_elements(By.CSS_SELECTOR, f'#grid rect[data-run="{failed}"][data-task]')}
    assert cells["report"] == "SUCCESS" and cells["check"] != "SUCCESS"  # the map that failed stands out
    assert "nightly_etl/6h" in browser.find_element(By.ID, "schedules").text
    shots(browser, "flow", too_wide)

    go(browser, url + "/runs?flow=publish")
    follow(browser, "#runs tbody a[href^='/runs/']")
    follow(browser, '#tasks a[href$="/tasks/upload"]')
    assert wait_css(browser, "#task-state").text == "FAILED"
    assert "ConnectionError: could not reach warehouse.internal" in browser.find_element(By.ID, "traceback").text
    shots(browser, "task", too_wide)
    assert too_wide == {}
