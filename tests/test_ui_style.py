"""How the UI looks, checked without a browser: the stylesheet, its colours, the templates.

- The state fills of rayflow.css are presentation.LOOKS' (the graph's, the timeline's, the CLI's).
- Every text colour reads at WCAG AA (4.5:1) on every ground it is put on, light and dark.
- No template has an inline <style>, an inline <script> or an event handler attribute (the CSP
  allows scripts from the UI's own files only).
- The pages over a history made by real runs: the stylesheet is served (before signing in too),
  the top bar marks the current page, states are badges, user text is escaped.
"""

from __future__ import annotations

import pathlib
import re

import pytest
from starlette.testclient import TestClient

import rayflow as rf
from rayflow.presentation import CATEGORIES, LOOKS, category
from rayflow.states import StateType
from rayflow.ui import create_app

UI = pathlib.Path(rf.__file__).parent / "ui"
CSS = (UI / "static" / "rayflow.css").read_text()
BASE = "http://127.0.0.1:4200"
TOKEN = "style-t0ken-3f9a0c6d1b2e"


def variables(scheme: str) -> dict[str, str]:
    """The colour variables of ``scheme`` ("light" or "dark": the light ones, overridden)."""
    light = re.search(r"^:root\s*\{(.*?)\}", CSS, re.S | re.M).group(1)
    found = dict(re.findall(r"(--[\w-]+):\s*([^;]+);", light))
    if scheme == "dark":
        dark = re.search(r"@media \(prefers-color-scheme: dark\)\s*\{\s*:root\s*\{(.*?)\}", CSS, re.S).group(1)
        found.update(re.findall(r"(--[\w-]+):\s*([^;]+);", dark))
    return {k: v.strip() for k, v in found.items()}


def luminance(hex_colour: str) -> float:
    """WCAG 2 relative luminance of ``#rrggbb``."""
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_contrast_is_computed_as_wcag_says():
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # the classic just-fails grey


# Text colours and the grounds each is put on.
READABLE = {
    ("--fg", "--muted", "--link", "--ok", "--failed", "--live"): ("--bg", "--surface", "--raised", "--hover"),
    ("--fg",): ("--code",),
    ("--badge-fg",): ("--fill-ok", "--fill-failed", "--fill-live", "--fill-muted"),
    ("--accent-fg",): ("--accent",),
    ("--bar-fg", "--bar-active"): ("--bar",),
}


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_colour_reads_at_wcag_aa_on_its_grounds(scheme):
    colours = variables(scheme)
    ratios = {
        (fg, bg): round(contrast(colours[fg], colours[bg]), 2)
        for fgs, bgs in READABLE.items() for fg in fgs for bg in bgs
    }
    assert {pair: r for pair, r in ratios.items() if r < 4.5} == {}, scheme
    assert len(ratios) == 6 * 4 + 1 + 4 + 1 + 2


def test_the_state_fills_are_presentations_colours():
    """Each category's fill is the colour of its main state (SUCCESS, FAILED, RUNNING, CANCELLED):
    a badge has the colour of that state's node in the graph and bar in the timeline."""
    main = {"ok": StateType.SUCCESS, "failed": StateType.FAILED, "live": StateType.RUNNING, "muted": StateType.CANCELLED}
    assert set(main) == set(CATEGORIES) and all(category(state) == cat for cat, state in main.items())
    for scheme in ("light", "dark"):
        colours = variables(scheme)
        for cat, state in main.items():
            assert colours[f"--fill-{cat}"].lower() == LOOKS[state].colour.lower(), (scheme, cat)
    for cat in CATEGORIES:  # a text colour, a badge and a card for every category
        for selector in (f".{cat} {{", f".badge.{cat} {{", f".card.{cat} .num"):
            assert selector in CSS, selector


def test_the_shared_vocabulary_is_in_the_stylesheet():
    for selector in (".cards", ".card", ".card .num", ".card .label", ".badge", "table.data", "td.num", ".filters",
                     ".pager", ".chart", ".empty", ".grid2", ".crumbs", ".muted", ".topbar"):
        assert re.search(re.escape(selector) + r"[\s,{:.]", CSS), selector
    assert "@media (prefers-color-scheme: dark)" in CSS and "@media (max-width: 1100px) { .grid2" in CSS


def test_no_template_has_inline_styles_scripts_or_handlers():
    for template in sorted((UI / "templates").glob("*.html")):
        text = template.read_text()
        assert "<style" not in text, template.name
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", text) == [], template.name
        assert re.findall(r"\son[a-z]+\s*=", text) == [], template.name
        assert "javascript:" not in text, template.name
        assert " style=" not in text, template.name  # a page's look is the stylesheet's (CSP: no inline styles)


@rf.task
def shout(word: str) -> str:
    if word == "boom":
        raise ValueError("<b>boom</b> & more")
    return word.upper()


@rf.flow(runner="local")
def styled(word: str = "hi"):
    return shout(word)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui-style")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(home))
        ok = styled.run()
        failed = styled.with_options(run_id="styled-failed").run(word="boom")
    return {"home": home, "ok": ok, "failed": failed, "client": TestClient(create_app(home), base_url=BASE)}


def test_the_stylesheet_is_served_and_every_page_links_it(history):
    client = history["client"]
    css = client.get("/static/rayflow.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css") and css.text == CSS
    for path in ("/runs", "/flows", f"/runs/{history['ok'].run_id}", "/runs/no-such-run", "/runs?page=x"):
        assert '<link rel="stylesheet" href="/static/rayflow.css">' in client.get(path).text, path
    signed = TestClient(create_app(history["home"], token=TOKEN), base_url=BASE)
    login = signed.get("/runs")  # the login page: it has the stylesheet before anyone signs in
    assert 'id="login"' in login.text and 'class="topbar"' not in login.text
    assert signed.get("/static/rayflow.css").status_code == 200


def test_the_top_bar_marks_the_page_it_is_on(history):
    client = history["client"]
    current = re.compile(r'<a href="([^"]+)" class="nav" aria-current="page">')
    assert current.findall(client.get("/runs").text) == ["/runs"]
    assert current.findall(client.get(f"/runs/{history['ok'].run_id}").text) == ["/runs"]
    assert current.findall(client.get("/flows").text) == ["/flows"]
    for path in ("/", "/runs", "/flows"):
        page = client.get(path).text
        assert all(f'<a href="{href}" class="nav"' in page for href in ("/", "/runs", "/flows", "/artifacts"))
        assert 'id="logout"' not in page  # no token: nobody signs out
    signed = TestClient(create_app(history["home"], token=TOKEN), base_url=BASE)
    signed.headers["Authorization"] = f"Bearer {TOKEN}"
    assert 'id="logout"' in signed.get("/flows").text


def test_the_runs_list_shows_states_as_badges_and_links_flows(history):
    client = history["client"]
    text = client.get("/runs").text
    assert '<span class="badge ok">SUCCESS</span>' in text and '<span class="badge failed">FAILED</span>' in text
    assert text.count('href="/flows/styled"') == 2 and 'class="filters"' in text
    assert re.search(r'<td class="num">\d+\.\d{3}s</td>', text)  # durations right-aligned
    asked = client.get("/runs?flow=<b>x</b>").text  # what was asked is said back, as text
    assert "<b>x</b>" not in asked and "flow &lt;b&gt;x&lt;/b&gt;" in asked and "no runs match these filters" in asked
    flows = client.get("/flows").text
    assert 'href="/flows/styled"' in flows and 'href="/runs?flow=styled"' in flows
    assert flows.count('class="tick ') == 2 and 'href="/runs/styled-failed" class="tick failed"' in flows
    empty = client.get("/runs?flow=nothing").text
    assert 'class="empty">no runs match these filters' in empty


def test_the_dashboard_and_a_flow_page_are_cards_badges_and_chart_cards_without_inline_styles(history):
    """The overview pages in the shared vocabulary; their SVG charts take their colours from the
    stylesheet's classes (no style= attribute: the CSP allows no inline styles, and dark mode
    comes from the variables)."""
    client = history["client"]
    dash, flow = client.get("/?range=7d").text, client.get("/flows/styled").text
    for page in (dash, flow, client.get("/flows").text, client.get("/artifacts").text):
        assert " style=" not in page and "<style" not in page
    assert re.search(r'<a class="card failed" href="[^"]+state=FAILED[^"]*"><span class="label">failed</span> <span class="num" data-state="FAILED">1</span>', dash)
    assert '<nav class="seg ranges" aria-label="range">' in dash and '<a href="/?range=7d" aria-current="true">7d</a>' in dash
    chart = dash.split('id="runs-chart"', 1)[1].split("</div>", 1)[0]
    assert '<ul class="legend">' in chart and 'class="axis"' in chart and 'class="label"' in chart
    assert dash.count('class="card panel"') == 4 and 'class="page-head"' in dash
    assert 'id="success-rate">50.0%<' in dash  # one of its two runs succeeded
    assert '<p class="crumbs"><a href="/flows">flows</a> › styled</p>' in flow and 'id="p95-duration"' in flow
    assert re.search(r'id="median-duration">\d+\.\d\ds<', flow)
    grid = flow.split('id="grid"', 1)[1].split("</div>", 1)[0]
    assert 'class="chart grid-card"' in flow and 'class="cell"' in grid and 'class="key"' in grid
    assert flow.count('data-state="FAILED"') >= 2  # the failed run and its failed task, in the grid
    durations = flow.split('id="durations"', 1)[1].split("</div>", 1)[0]
    assert 'class="series-0"' in durations and 'class="series-1"' in durations


def test_a_legend_has_one_entry_per_fill_colour():
    from rayflow.ui.charts import legend

    assert legend(["SUCCESS", "MAPPED", "FAILED", "CRASHED"]) == [
        ("SUCCESS", "success · mapped"), ("FAILED", "failed"), ("CRASHED", "crashed")]


def test_the_error_and_missing_pages_have_the_look_and_escape_the_name(history):
    client = history["client"]
    missing = client.get("/runs/%3Cscript%3Ex")
    assert missing.status_code == 404 and 'class="message-page"' in missing.text
    assert "<script>x" not in missing.text and "&lt;script&gt;x" in missing.text
    bad = client.get("/runs?since=<img src=x>")
    assert bad.status_code == 400 and 'class="message-page"' in bad.text and 'id="error"' in bad.text
    assert "<img" not in bad.text and "&lt;img src=x&gt;" in bad.text


def test_the_run_and_task_pages_have_the_head_cards_charts_and_log_viewer(history):
    """A run's page: its state a big badge in the head, summary cards, the graph and the timeline
    in chart cards with a legend of state fills, the tasks' states as badges, logs a line per
    record marked by level; its task's page the same head and a traceback block.  The graph is
    drawn on the page's own ground in dark mode (no light box of its own)."""
    client = history["client"]
    page = client.get("/runs/styled-failed").text
    head = page.split('class="page-head"', 1)[1].split('id="run-cards"', 1)[0]
    assert '<span class="badge big failed" id="run-state">FAILED</span>' in head and "Ray dashboard</a>" in head
    cards = page.split('id="run-cards"', 1)[1].split('class="chart graph-card"', 1)[0]
    assert re.findall(r'<span class="label">([a-z]+(?: [a-z]+)?)', cards) == ["duration", "tasks", "run attempts"]
    assert 'class="card failed"><span class="num">1</span><span class="label">tasks · 1 failed' in cards
    assert '<div class="chart timeline-card">' in page and page.count('class="legend"') == 2
    assert f'fill="{LOOKS[StateType.FAILED].colour}"' in page.split('class="legend"', 1)[1]  # the legend's swatch: the state's fill
    tasks = page.split('id="tasks"', 1)[1].split("</table>", 1)[0]
    assert '<td><span class="badge failed">FAILED</span></td>' in tasks and "&lt;b&gt;boom&lt;/b&gt; &amp; more" in tasks
    assert re.search(r'<span class="log-line lvl-error">[^<]*ERROR shout', page)
    task = client.get("/runs/styled-failed/tasks/shout").text
    assert '<span class="badge big failed" id="task-state">FAILED</span>' in task
    assert '<pre class="traceback" id="traceback">' in task and "<b>boom" not in task
    dark = re.search(r"@media \(prefers-color-scheme: dark\)\s*\{(.*?)\n\}", CSS, re.S).group(1)
    assert "svg.graph" not in dark and "background" not in dark  # dark mode changes colours, not the graph's ground
