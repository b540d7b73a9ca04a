"""The UI's pages as an attacker and a careless user meet them, over a history made by real runs
whose every name, parameter, log line, error and artifact is hostile text (tests/hostile_flows.py).

- Escaping: no page lets user text become markup: no script but the UI's own files, no event
  handler attribute, no style, no link or image to a ``javascript:``/``data:``/``vbscript:``
  address, no image but a recorded PNG of this UI; ``{{7*7}}`` is shown as written.
- The CSP allows no inline style (``style-src 'self'``): no template and no page (its server-drawn
  SVG charts, graph and timeline included) has a ``style=`` attribute or a ``<style>``; htmx is
  told not to inject its indicator styles.
- Every page and fragment needs the token and passes the host check; the only POST routes are
  the ones that check the CSRF token.
- Bad inputs are a 400 with the reason or a 404, never a 500: numbers past SQLite's integers too.
"""

from __future__ import annotations

import base64
import html
import io
import json
import pathlib
import re
import sys
from html.parser import HTMLParser
from urllib.parse import quote

import pytest
from hostile_flows import FLOW, MAP, TASK, XSS, hostile
from starlette.testclient import TestClient

import rayflow as rf
from rayflow.store import RunStore
from rayflow.ui import create_app
from rayflow.ui.security import CSP

UI = pathlib.Path(rf.__file__).parent / "ui"
BASE = "http://127.0.0.1:4200"
TOKEN = "hostile-t0ken-8c1d2e3f4a5b"
BAD_SCHEMES = re.compile(r"^\s*(javascript|data|vbscript)\s*:", re.I)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui-hostile")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(home))
        failed = hostile.with_options(runner="local").run()
        hostile.with_options(runner="local").run(fail=False)  # a second version of each artifact key
    store = RunStore(home)
    return {"home": home, "run": failed.run_id, "store": store,
            "client": TestClient(create_app(home), base_url=BASE, raise_server_exceptions=False)}


def pages(run_id: str) -> list[str]:
    """Every page and fragment of issue 24 over the hostile run (names quoted as the UI links them)."""
    task, the_map = quote(TASK, safe=""), quote(MAP, safe="")
    return [
        "/", "/?range=7d", "/runs", "/runs?from=2020-01-01&to=2100-01-01", "/flows", f"/flows/{quote(FLOW, safe='')}",
        f"/runs/{run_id}", f"/runs/{run_id}?q={quote(XSS)}", f"/runs/{run_id}/logs?after=0",
        f"/runs/{run_id}/maps/{the_map}", f"/runs/{run_id}/maps/{the_map}?error=builtins.ValueError",
        f"/runs/{run_id}/maps/{the_map}/items/1", f"/runs/{run_id}/tasks/{the_map}", f"/runs/{run_id}/tasks/fails",
        "/artifacts", "/artifacts/hostile-report", "/artifacts/hostile-report?version=1", "/artifacts/hostile-table",
        "/artifacts/hostile-link", f"/runs/{run_id}/artifacts", f"/runs/{run_id}/artifacts?task={task}",
    ]


class Markup(HTMLParser):
    """What a page would make a browser do: scripts, handlers, styles, links and images."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and not (values.get("src") or "").startswith("/static/"):
            self.problems.append(f"a script not of this UI: {attrs}")
        if tag == "style":
            self.problems.append("a <style> element")
        if tag in ("iframe", "object", "embed", "base"):
            self.problems.append(f"a <{tag}>")
        if tag == "img" and not (values.get("src") or "").startswith("/artifacts/image/"):
            self.problems.append(f"an image not of this UI: {attrs}")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"an event handler {name}={value!r} on <{tag}>")
            if name == "style":
                self.problems.append(f"a style attribute on <{tag}>: {value!r}")
            if name in ("href", "src", "action", "xlink:href", "formaction") and BAD_SCHEMES.match(value or ""):
                self.problems.append(f"<{tag} {name}={value!r}>")


def problems_of(html: str) -> list[str]:
    parser = Markup()
    parser.feed(html)
    return parser.problems


def test_the_markup_check_finds_what_it_looks_for():
    found = problems_of(
        '<script>x</script><img src=x onerror=alert(1)><a href=" JavaScript:alert(1)">a</a><p style="color:red">'
        '<svg><a xlink:href="data:text/html,x"></a><style>p{}</style></svg>'
    )
    assert len(found) == 7, found  # the image counts twice: its address and its handler
    assert problems_of('<script src="/static/htmx.min.js"></script><img src="/artifacts/image/3"><a href="/runs/x">') == []


def test_no_page_turns_user_text_into_markup(history):
    client = history["client"]
    for path in pages(history["run"]):
        page = client.get(path)
        assert page.status_code == 200, (path, page.status_code, page.text[-300:])
        assert problems_of(page.text) == [], path
    # The hostile text is there, as text: {{7*7}} written, not worked out.
    task_page = client.get(f"/runs/{history['run']}/tasks/fails").text
    assert "{{7*7}}" in task_page and "&lt;script&gt;alert(2)&lt;/script&gt;" in task_page


def test_markdown_artifacts_link_nowhere_unsafe_and_keep_no_raw_html(history):
    page = history["client"].get("/artifacts/hostile-report").text
    body = page[page.index('class="markdown"'):]
    body = body[:body.index("</div>")]
    links = re.findall(r'<a href="([^"]*)"', body)
    assert links == ["https://example.com/x.png", "https://example.com/"], links  # the image is a link; no js, data, vbscript
    assert "<img" not in body and "<script" not in body and "<style" not in body
    assert 'title="x&quot; onmouseover=&quot;alert(8)"' in body  # a title's quotes stay inside it


def test_no_style_attribute_or_element_in_templates():
    for template in sorted((UI / "templates").glob("*.html")):
        text = template.read_text()
        assert not re.search(r"\sstyle\s*=", text), f"{template.name} has a style= attribute: use a class"
        assert "<style" not in text, template.name


def test_no_svg_renderer_or_page_module_writes_a_style_attribute():
    """The SVG renderers (ui/svg.py, svg_timeline.py, map_svg.py, charts.py) and the pages write
    markup in Python: none of it may hold a style attribute (a class and a rule in rayflow.css)."""
    scripts = [p for p in (UI / "static").glob("*.js") if not p.name.endswith(".min.js")]  # not the vendored htmx
    sources = [*UI.glob("*.py"), *(UI / "pages").glob("*.py"), *scripts]
    assert {p.name for p in sources} >= {"svg.py", "svg_timeline.py", "map_svg.py", "charts.py", "graph.js"}
    for source in sources:
        text = source.read_text()
        assert not re.search(r"style\s*=\s*\\?[\"']", text), f"{source.name} writes a style= attribute: use a class"
        assert "<style" not in text and "setAttribute(\"style\"" not in text, source.name


def test_the_csp_allows_no_inline_style_and_htmx_injects_none(history):
    assert "style-src 'self';" in CSP and "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
    assert "img-src 'self';" in CSP and "data:" not in CSP  # images: a recorded PNG of this UI, nothing inline
    page = history["client"].get("/runs")
    assert page.headers["content-security-policy"] == CSP
    config = re.search(r"<meta name=\"htmx-config\" content='([^']*)'>", page.text)
    assert config is not None
    # No indicator <style> (the CSP would refuse it); no eval of hx-vals/hx-on/trigger filters, no script
    # of a swapped fragment run: what the CSP refuses anyway, htmx does not even try.
    assert json.loads(config.group(1)) == {"includeIndicatorStyles": False, "allowEval": False, "allowScriptTags": False}


def test_the_svg_charts_graph_and_timeline_carry_no_style_attribute(history):
    client = history["client"]
    drawn = {path: client.get(path).text for path in ("/", f"/flows/{quote(FLOW, safe='')}", f"/runs/{history['run']}",
                                                        f"/runs/{history['run']}/maps/{quote(MAP, safe='')}")}
    for path, text in drawn.items():
        assert "<svg" in text, path
        assert not re.search(r"\sstyle\s*=", text), path
        assert "<style" not in text, path


def test_every_page_needs_the_token_and_a_known_host(history):
    client = TestClient(create_app(history["home"], token=TOKEN), base_url=BASE, follow_redirects=False)
    paths = pages(history["run"]) + ["/api/artifacts", f"/api/runs/{history['run']}/artifacts", "/artifacts/image/1"]
    for path in paths:
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert not any(told in refused.text for told in ("boom", "log line", "example.com")), path  # nothing of the history
        assert problems_of(refused.text) == [], path  # the login page repeats the path asked for: escaped
        assert client.get(path, headers={"host": "evil.example"}).status_code == 400, path
        assert client.get(path, headers={"authorization": f"Bearer {TOKEN}"}).status_code in (200, 404), path


def test_the_only_post_routes_are_the_ones_that_check_csrf(history):
    app = create_app(history["home"])
    posts = sorted(r.path for r in app.routes if "POST" in (getattr(r, "methods", None) or ()))
    # Each of these checks the CSRF token (ui.refused_post / ui.refused_action; tests/test_security.py).
    assert posts == [
        "/flows/{flow}/run", "/login", "/logout", "/runs/{run_id}/approve", "/runs/{run_id}/cancel", "/runs/{run_id}/reject",
        "/runs/{run_id}/resume",
    ]


def test_an_image_is_served_only_as_a_recorded_png(history, tmp_path):
    store, client = history["store"], history["client"]
    kinds = {a["artifact_id"]: a["kind"] for a in store.run_artifacts(history["run"]) if a["kind"] != "image"}
    for artifact_id in kinds:  # markdown, table, link: not images
        assert client.get(f"/artifacts/image/{artifact_id}").status_code == 404
    # A row that says image but holds no PNG (a history written by hand): 404, never served as image/png.
    with store._connect() as db:
        db.execute("UPDATE artifacts SET kind = 'image', image = ? WHERE artifact_id = ?",
                   [base64.b64encode(b"<html><script>alert(1)</script>").decode(), min(kinds)])
    try:
        refused = client.get(f"/artifacts/image/{min(kinds)}")
        assert refused.status_code == 404 and refused.headers["content-type"].startswith("text/html")
    finally:
        with store._connect() as db:
            db.execute("UPDATE artifacts SET kind = ?, image = NULL WHERE artifact_id = ?", [kinds[min(kinds)], min(kinds)])
    image = next(a for a in store.run_artifacts(history["run"]) if a["kind"] == "image")
    served = client.get(f"/artifacts/image/{image['artifact_id']}")
    assert served.status_code == 200 and served.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert served.headers["content-type"] == "image/png" and served.headers["x-content-type-options"] == "nosniff"
    assert served.headers.get_list("cache-control") == ["private, max-age=3600"]  # one header: no no-store added to it
    for path in ("/artifacts/image/99999999999999999999999999", "/artifacts/image/9223372036854775808",
                 "/artifacts/image/-1", "/artifacts/image/x", "/artifacts/image/%00"):
        assert client.get(path).status_code == 404, path


BAD = [  # (path, status, what the answer says); {run} and {map} are filled in
    ("/?range=bogus", 400, "range"), ("/runs?page=0", 400, "page"), ("/runs?page=99999999999999999999999", 400, "page"),
    ("/runs?from=yesterday", 400, "from"), ("/runs?to=2026-01-01T25:00", 400, "to"),
    ("/runs?from=2026-02-01&to=2026-01-01", 400, "from"), ("/runs?state=%00", 400, "state"),
    ("/{run}?collapse=nope", 400, "collapse"), ("/{run}?q=" + "x" * 501, 400, "500"), ("/{run}?q=a&q=b", 400, "once"),
    ("/{run}?level=BOGUS", 400, "level"), ("/{run}?task=nope", 400, "task"),
    ("/{run}/logs?after=x", 400, "after"), ("/{run}/logs?after=99999999999999999999999", 400, "after"),
    ("/{run}/logs?q=" + "x" * 501, 400, "500"),
    ("/{run}/maps/{map}?state=BOGUS", 400, "state"), ("/{run}/maps/{map}?error=Nope", 400, "error"),
    ("/{run}/maps/{map}?after=-1", 400, "after"), ("/{run}/maps/{map}?after=99999999999999999999", 400, "after"),
    ("/artifacts?page=x", 400, "page"), ("/artifacts/hostile-report?version=0", 400, "version"),
    ("/artifacts/hostile-report?version=999999999999999999999999", 400, "version"),
    ("/{run}/artifacts?page=0", 400, "page"), ("/{run}/artifacts?task=" + "x" * 501, 400, "500"),
    ("/api/artifacts?key=a&key=b", 400, "once"), ("/api/runs/{run_id}/items?task={map}&after=99999999999999999999", 400, "after"),
    ("/api/runs/{run_id}/items?task={map}&after=-2", 400, "after"), ("/api/runs/{run_id}/artifacts?page=x", 400, "page"),
    ("/flows/nope", 404, "nope"), ("/flows/%00", 404, "flow"), ("/runs/nope", 404, "nope"), ("/runs/nope/logs", 404, "nope"),
    ("/{run}/maps/nope", 404, "nope"), ("/{run}/maps/{map}/items/999999", 404, "999999"),
    ("/{run}/maps/{map}/items/99999999999999999999999999", 404, "item"), ("/{run}/maps/fails", 404, "fails"),
    ("/{run}/tasks/nope", 404, "nope"), ("/{run}/tasks/..%2F..", 404, "task"), ("/runs/nope/tasks/x", 404, "nope"),
    ("/artifacts/%E2%80%AEkey", 404, "\u202ekey"), ("/runs/%F0%9F%92%A5", 404, "\U0001f4a5"), ("/flows/%FF%FE", 404, "flow"),
    ("/{run}/maps/{map}/items/%EF%BC%91", 404, "item"), ("/{run}/logs?after=%EF%BC%91", 400, "after"),
    ("/artifacts/nope", 404, "nope"), ("/artifacts/hostile-report?version=99", 404, "99"),
    ("/api/artifacts?key=nope", 404, "nope"), ("/api/runs/nope/artifacts", 404, "nope"), ("/runs/nope/artifacts", 404, "nope"),
]


@pytest.mark.parametrize("path, status, says", BAD, ids=[b[0][:60] for b in BAD])
def test_a_bad_input_is_a_400_with_its_reason_or_a_404(history, path, status, says):
    run = history["run"]
    url = path.replace("/{run}", f"/runs/{run}").replace("{run_id}", run).replace("{map}", quote(MAP, safe=""))
    answer = history["client"].get(url)
    assert answer.status_code == status, (url, answer.text[-400:])
    assert says in answer.text and "Traceback" not in answer.text
    if url.startswith("/api/"):
        assert "error" in answer.json()


def test_a_404_repeats_a_long_name_cut(history):
    answer = history["client"].get("/flows/" + "x" * 5000)
    assert answer.status_code == 404 and "x" * 200 + "…" in answer.text and "x" * 201 not in answer.text


def test_the_map_pages_links_keep_a_key_with_a_query_or_fragment_mark_in_the_path(history):
    client, run = history["client"], history["run"]
    page = client.get(f"/runs/{run}/maps/{quote(MAP, safe='')}?after=0&state=FAILED").text
    first = re.search(r'<a href="([^"]*)" id="first-page"', page)
    assert first is not None
    href = first.group(1).replace("&amp;", "&")
    assert href.startswith(f"/runs/{run}/maps/{quote(MAP, safe='')}?"), href
    again = client.get(href.split("#")[0])
    assert again.status_code == 200 and 'id="map-live"' in again.text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_table_shows_a_cell_as_written_not_as_markup_nor_escape_sequences():
    from rayflow.cli.output import emit_table

    shown = Terminal()
    emit_table(["key", "state"], [["[red]x[/red] [link=https://evil.example]y[/link]", "FAILED"]], stream=shown, state_column=1)
    text = shown.getvalue()
    assert "[red]x[/red]" in text and "[link=https://evil.example]y[/link]" in text  # markup would have eaten them
    assert "\x1b]8;" not in text  # no terminal hyperlink made of a cell
    shown = Terminal()
    emit_table(["summary"], [["x\x1b]0;pwned\x07y\x1b[2Jz"]], stream=shown)
    assert "x?]0;pwned?y?[2Jz" in shown.getvalue() and "\x1b]" not in shown.getvalue()


def test_artifacts_show_on_a_terminal_prints_no_escape_sequence(monkeypatch):
    from rayflow.cli.artifacts_cmd import _print_body

    text = "title\x1b]0;pwned\x07 \x1b[2J cleared\x9b31m\nnext\tline"
    monkeypatch.setattr("sys.stdout", Terminal())
    _print_body({"kind": "markdown", "data": {"text": text}})
    _print_body({"kind": "link", "data": {"url": "https://example.com/", "text": "a\x1b[8mhidden"}})
    shown = sys.stdout.getvalue()
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert shown == "title?]0;pwned? ?[2J cleared?31m\nnext\tline\na?[8mhidden <https://example.com/>\n"
    monkeypatch.setattr("sys.stdout", io.StringIO())  # a pipe gets the text exact
    _print_body({"kind": "markdown", "data": {"text": text}})
    assert sys.stdout.getvalue() == text + "\n"


def test_every_link_of_every_page_leads_to_a_page(history):
    """Names with '?', '#', '%2F', quotes and markup are quoted in every link (over a real server:
    the test client decodes a path twice)."""
    import httpx
    from ui_http import uvicorn_server

    with uvicorn_server(create_app(history["home"])) as url, httpx.Client(base_url=url) as client:
        links: set[str] = set()
        for path in pages(history["run"]):
            text = client.get(path).text
            found = re.findall(r'(?:href|hx-get)="(/[^"]*)"', text)
            links.update(html.unescape(link).split("#")[0] for link in found if not link.startswith("/static/"))
        assert len(links) > 30
        broken = {link: status for link in sorted(links) if (status := client.get(link).status_code) != 200}
        assert broken == {}
