"""The strict CSP (no inline style, no inline script) in a real headless chromium: every page of
the UI over a history of hostile runs (tests/hostile_flows.py) loads with no CSP violation and no
script error in the browser's console, draws its SVG axes in the stylesheet's colours (classes,
not style attributes), and no injected script ran.  Screenshots of the pages go to SHOTS
(``hostile-*.png``)."""

from __future__ import annotations

import os
from urllib.parse import quote

import pytest
from hostile_flows import FLOW, MAP, TASK, hostile
from ui_browser import CHROMEDRIVER, CHROMIUM, SHOTS, chromium, go, save, set_scheme, wait_until

from rayflow.ui import create_app

pytestmark = pytest.mark.skipif(
    not (CHROMEDRIVER and CHROMIUM) and not os.environ.get("CI"),
    reason="chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
)

# htmx has sent every hx-trigger="load" request (its node data says so) and none is in flight (the
# element keeps its htmx-request class until the response is swapped in).
HTMX_LOADED = """return [...document.querySelectorAll('[hx-trigger="load"]')].every(e => (e['htmx-internal-data'] || {}).loaded)
    && !document.querySelector('.htmx-request')"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from ui_http import uvicorn_server

    home = tmp_path_factory.mktemp("ui-csp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(home))
        run = hostile.with_options(runner="local").run()
    with uvicorn_server(create_app(home)) as url:
        yield url, run.run_id


def test_every_page_keeps_the_strict_csp_in_a_real_browser(served):
    from selenium.common.exceptions import NoAlertPresentException

    url, run_id = served
    the_map = quote(MAP, safe="")
    paths = {
        "dashboard": "/", "runs": "/runs", "flows": "/flows", "flow": f"/flows/{quote(FLOW, safe='')}", "run": f"/runs/{run_id}",
        "map": f"/runs/{run_id}/maps/{the_map}", "item": f"/runs/{run_id}/maps/{the_map}/items/1",
        "task": f"/runs/{run_id}/tasks/{quote(TASK, safe='')}", "artifacts": "/artifacts", "artifact": "/artifacts/hostile-report",
    }
    with chromium(console=True) as browser:
        browser.get_log("browser")  # start from an empty console
        for name, path in paths.items():
            go(browser, url + path)
            wait_until(lambda: browser.execute_script(HTMX_LOADED), what=f"htmx's loads on {name}")  # a run's artifacts
            with pytest.raises(NoAlertPresentException):  # no injected alert(...) ran
                browser.switch_to.alert.text
            # htmx was configured from the meta tag: it injected no <style> (the CSP would refuse it).
            assert browser.execute_script("return document.querySelectorAll('style').length") == 0, name
            assert browser.execute_script("return [htmx.config.includeIndicatorStyles, htmx.config.allowEval]") == [False, False]
            console = [e["message"] for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
            assert console == [], (name, console)
            for scheme in ("light", "dark"):
                set_scheme(browser, scheme)
                save(browser, SHOTS / f"hostile-{name}-{scheme}.png")
            set_scheme(browser, "light")
        # A chart's axis lines and muted labels take the stylesheet's colours through their classes.
        go(browser, url + "/")
        stroke = browser.execute_script(
            "const l = document.querySelector('svg.bars line.axis'); return l && getComputedStyle(l).stroke")
        fill = browser.execute_script(
            "const t = document.querySelector('svg.bars text.label'); return t && getComputedStyle(t).fill")
        assert stroke and stroke not in ("none", "rgb(0, 0, 0)"), stroke
        assert fill and fill != "rgb(0, 0, 0)", fill
        assert browser.get_log("browser") == []
