"""Secrets stay secret: a flow given SecretStr/SecretBytes parameters, which it passes to its
tasks (a plain task, a mapped task, a task that fails with a message made of its inputs, tasks
that log and print them), run on real Ray from the CLI and from Python, traced to a real OTLP
receiver, with results persisted and cached.  Then every output is searched for the secrets'
plaintext: every span, every CLI output, every UI page, every error the driver sees, and every
byte of every file under RAYFLOW_HOME (the history with its WAL, result files, cache segments).

A plain parameter, the canary, travels the same paths: each search must find it, so a search
that finds no secret looked where a leak would have shown.

Also: the files rayflow makes are owner-only, and Ray is started with its dashboard on loopback;
and the web UI answers only its own host names, asks for its token where it has one (and must
have one beyond loopback), takes actions only from its own pages' forms, and forbids framing.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import stat
import subprocess
import sys
import traceback

import early
import pytest
from cli_runner import run_cli, run_cli_in_process
from otlp_sink import HttpSink
from pydantic import SecretBytes, SecretStr
from secret_flows import vault
from starlette.testclient import TestClient
from ui_http import csrf_token, free_port, uvicorn_server
from waiting import wait_for

import rayflow as rf
from rayflow.runtime.driver.auth import TOKEN_AUTH_DOCS, _on_loopback
from rayflow.ui import create_app

REPO = pathlib.Path(__file__).resolve().parent.parent

SECRET = "hunter2-s3cr3t-t0ken"
SECRET_BYTES = "9909090909090909"  # reads as a JSON number: the CLI must still take it as text
CANARY = "canary-c4n4ry-plain"
PLAINTEXTS = (SECRET, SECRET_BYTES)


def leaked(data: str | bytes) -> list[str]:
    """The secrets whose plaintext is in ``data``."""
    if isinstance(data, bytes):
        return [s for s in PLAINTEXTS if s.encode() in data]
    return [s for s in PLAINTEXTS if s in data]


def has_canary(data: str | bytes) -> bool:
    return (CANARY.encode() if isinstance(data, bytes) else CANARY) in data


def snapshot(home: pathlib.Path) -> dict[str, bytes]:
    """Every file under ``home``, by its path relative to it."""
    return {p.relative_to(home).as_posix(): p.read_bytes() for p in home.rglob("*") if p.is_file()}


def span_texts(spans: list[dict]) -> list[str]:
    """Every name, attribute and event of every span, as text."""
    out = []
    for s in spans:
        out.append(s["name"])
        out.extend(f"{k}={v!r}" for k, v in {**s["attributes"], **s["resource"]}.items())
        out.extend(f"{name} {attrs!r}" for name, attrs in s["events"])
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_secret_parameters_and_task_inputs_appear_nowhere(ray_session, tmp_path, monkeypatch, local_heads):
    home = tmp_path / "home"
    sink = HttpSink()
    env = {"RAYFLOW_HOME": str(home), "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "RAY_ADDRESS": ""}
    monkeypatch.setenv("RAYFLOW_HOME", str(home))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
    outputs: dict[str, str] = {}  # every CLI output, by what made it
    secret_args = ("-p", f"token={SECRET}", "-p", f"key={SECRET_BYTES}")
    refusing = concurrent.futures.ThreadPoolExecutor(1)  # a secret of the wrong type, refused: beside the runs below
    bad_json_future = refusing.submit(run_cli, "run", "secret_flows:vault", "--params-json",
                                      json.dumps({"token": SECRET, "key": int(SECRET_BYTES)}), "--local", **env)
    refusing.shutdown(wait=False)
    try:
        for run_id in ("vault-1", "vault-2"):  # the second run's sign and items come from the cache
            out = run_cli("run", "secret_flows:vault", *secret_args, "--address", ray_session, "--run-id", run_id, **env)
            assert out.returncode == 1, out.stdout + out.stderr[-3000:]  # reject() fails the run
            outputs[f"run {run_id}"] = out.stdout + out.stderr
        assert "CACHED" in outputs["run vault-2"]

        # From Python, in this driver: every exception it sees, with its causes and tracebacks.
        errors: list[str] = []
        run = vault.run(token=SecretStr(SECRET), key=SecretBytes(SECRET_BYTES.encode()))
        with pytest.raises(rf.FlowRunError) as failed:
            run.result()
        errors.append("".join(traceback.format_exception(failed.value)))
        errors.append(repr(failed.value) + repr(failed.value.__cause__))
        for key, state in run.task_states.items():
            errors.append(f"{key} {state!r} {state.message} {state.error!r} {state.exception!r}")
        errors.extend(f"{s!r} {s.message} {s.error!r}" for s in run.map_states("check"))
        with pytest.raises(rf.ParameterError) as bad:  # a secret of the wrong type: named, not shown
            vault.run(token=SecretStr(SECRET), key=int(SECRET_BYTES))
        errors.append(str(bad.value) + repr(bad.value.errors))
        assert "key" in bad.value.errors
        bad_json = bad_json_future.result()
        assert bad_json.returncode == 2 and "key" in bad_json.stderr, bad_json.stderr
        outputs["run with a bad --params-json"] = bad_json.stdout + bad_json.stderr
        assert any(has_canary(e) for e in errors)
        assert not [e for e in errors if leaked(e)], [e for e in errors if leaked(e)]

        # Every span (the two CLI runs and this one), every attribute and event.
        spans = sink.wait_for(lambda got: len([s for s in got if s["name"] == "flow vault"]) == 3)
        assert len([s for s in spans if s["name"] == "flow vault"]) == 3
        assert {"task sign", "task check", "task reject"} <= {s["name"] for s in spans}
        texts = span_texts(spans)
        assert any(has_canary(t) for t in texts)
        assert not [t for t in texts if leaked(t)]
        assert not [body for body in sink.raw if leaked(body)]
        contents = snapshot(home)  # as the runs left it (the history's WAL with it), and again at the end
    finally:
        sink.close()

    # Every CLI command that reads the history or the result store (read-only: in this process,
    # its stdout and stderr captured as a subprocess's would be; was ten subprocesses).
    reads = (
        ["runs"], ["runs", "--json"], ["show", "vault-1"], ["show", "vault-1", "--json"], ["show", run.run_id],
        ["logs", "vault-1"], ["logs", "vault-2"], ["logs", run.run_id], ["cache", "ls"], ["graph", "--run", "vault-1"],
    )
    read = [run_cli_in_process(*args, **env) for args in reads]
    for args, out in zip(reads, read):
        assert out.returncode == 0, (args, out.stderr)
        outputs[" ".join(args)] = out.stdout + out.stderr
    for name in ("show vault-1 --json", "logs vault-1", "run vault-1"):
        assert has_canary(outputs[name]), name
    assert "item 2 refused" in outputs["logs vault-1"] and "**********" in outputs["logs vault-1"]
    assert {name: leaked(text) for name, text in outputs.items() if leaked(text)} == {}

    # Every UI page.
    client = TestClient(create_app(home), base_url="http://127.0.0.1:4200")  # a Host the UI answers
    pages = {}
    for url in (
        "/", "/runs", "/flows", "/flows/vault", "/api/runs", "/runs?flow=vault", "/runs?state=FAILED",
        *(f"/runs/{rid}{q}" for rid in ("vault-1", "vault-2", run.run_id) for q in ("", "?level=ERROR", "?task=check")),
        *(f"/api/runs/{rid}" for rid in ("vault-1", run.run_id)),
    ):
        page = client.get(url)
        assert page.status_code == 200, url
        pages[url] = page.text
    assert has_canary(pages["/runs/vault-1"]) and has_canary(pages["/api/runs/vault-1"])
    assert {url: leaked(text) for url, text in pages.items() if leaked(text)} == {}

    # Every byte of every file under RAYFLOW_HOME.
    contents = {**{f"{name} (after the runs)": data for name, data in contents.items()}, **snapshot(home)}
    names = set(contents)
    assert "history.db" in names and any(n.startswith("results/runs/vault-1/") for n in names)
    assert any("/items/seg-" in n for n in names)  # the mapped task's cache segments
    assert has_canary(b"".join(contents.values()))
    assert any(has_canary(data) for name, data in contents.items() if name.startswith("results/runs/"))
    assert any(has_canary(data) for name, data in contents.items() if "/items/seg-" in name)
    assert {name: leaked(data) for name, data in contents.items() if leaked(data)} == {}

    # Owner-only: RAYFLOW_HOME and every folder and file rayflow made in it (history, WAL,
    # results, cache entries and segments).
    loose = {
        p.relative_to(home).as_posix() or ".": oct(stat.S_IMODE(p.stat().st_mode))
        for p in [home, *home.rglob("*")]
        if stat.S_IMODE(p.stat().st_mode) & 0o077
    }
    assert loose == {}


START_LOCAL = """
import json, ray
from rayflow.runtime.driver.auth import token_auth_enabled
from rayflow.runtime.driver.cluster import connect
connect()
info = ray._private.worker.global_worker.node.address_info
print(json.dumps({"gcs": info["gcs_address"], "dashboard": info.get("webui_url"), "token_auth": token_auth_enabled()}), flush=True)
"""


def python(code: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs,
    )


def ray_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    return {**env, **extra}


@pytest.fixture(scope="module")
def local_heads(request):
    """The local Rays the two tests below start through rayflow's ``connect()``, started at once:
    ``default`` as a user gets it, ending once up; ``disabled`` (no token authentication) up until
    its stdin ends.  Where one of the two is to run, they start with the test before them, beside it."""
    if not early.selected(request, "test_a_ray_rayflow_starts_has_no_dashboard_and_keeps_token_authentication",
                          "test_a_cluster_without_token_authentication_beyond_loopback_warns_once"):
        yield {}
        return
    heads = {
        "default": python(START_LOCAL + "ray.shutdown()\n", ray_env()),
        "disabled": python(START_LOCAL + "import sys; sys.stdin.read(); ray.shutdown()\n", ray_env(RAY_AUTH_MODE="disabled")),
    }
    yield heads
    for head in heads.values():  # each test ends its own: this ends one a test left running
        if head.poll() is None:
            head.communicate(input="", timeout=60)


@pytest.mark.timeout(120)
def test_a_ray_rayflow_starts_has_no_dashboard_and_keeps_token_authentication(local_heads):
    started = local_heads["default"]
    out, err = started.communicate(timeout=100)
    assert started.returncode == 0, err[-3000:]
    info = json.loads(out)
    assert not info["dashboard"]  # no dashboard at all, so none beyond localhost
    import ray

    if tuple(int(p) for p in ray.__version__.split(".")[:2]) >= (2, 59):  # Ray's default for a local Ray
        assert info["token_auth"] is True
        assert "without token authentication" not in err


@pytest.mark.timeout(180)
def test_a_cluster_without_token_authentication_beyond_loopback_warns_once(tmp_path, local_heads):
    assert _on_loopback("127.0.0.1") and _on_loopback("localhost") and _on_loopback("[::1]")
    assert not _on_loopback("10.1.2.3") and not _on_loopback("192.0.2.7")
    # A cluster whose owner turned token authentication off (rayflow starts it: it says so too).
    head = local_heads["disabled"]
    try:
        info = json.loads(head.stdout.readline())
        assert info["token_auth"] is False
        if _on_loopback(info["gcs"].rsplit(":", 1)[0]):
            pytest.skip(f"Ray's node address here is loopback ({info['gcs']}): nothing to warn about")
        # A driver without a token joins it (twice, in one process): one warning, naming Ray's guide.
        join = python(
            "import ray\nfrom rayflow.runtime.driver.cluster import connect\n"
            f"for _ in range(2):\n    connect({info['gcs']!r})\n    ray.shutdown()\n",
            ray_env(HOME=str(tmp_path)),
        )
        out, err = join.communicate(timeout=120)
        assert join.returncode == 0, err[-3000:]
        assert err.count("without token authentication") == 1, err[-3000:]
        assert f"Ray cluster at {info['gcs']} runs without token authentication" in err and TOKEN_AUTH_DOCS in err
    finally:
        _, head_err = head.communicate(input="", timeout=60)  # its stdin ends: it shuts its Ray down
    assert head_err.count("without token authentication") == 1 and TOKEN_AUTH_DOCS in head_err, head_err[-3000:]


@rf.task
def hello(name: str) -> str:
    return f"hello {name}"


@rf.flow(runner="local")
def greet(name: str = "you") -> str:
    return hello(name)


def test_ui_actions_refuse_a_post_from_another_sites_page(tmp_path, monkeypatch):
    """Cross-site request forgery: a page on another site (or on another port of localhost) that
    posts a form to the UI of `rayflow serve --ui` must not start, cancel or resume anything."""
    from rayflow.store import RunStore
    from rayflow.ui.actions import ServeActions

    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    client = TestClient(create_app(tmp_path, ServeActions([greet])), base_url="http://127.0.0.1:4200", follow_redirects=False)
    token = csrf_token(client.get("/flows").text)  # even with the page's token (and its cookie)
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "http://localhost:8000"},  # another local app: the same site, another origin
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        refused = client.post("/flows/greet/run", data={"name": "mallory", "csrf_token": token}, headers=headers)
        assert refused.status_code == 403 and "another site" in refused.text, headers
        for action in ("resume", "cancel", "approve", "reject"):  # refused before the run is even looked up
            assert client.post(f"/runs/any-run/{action}", data={"csrf_token": token}, headers=headers).status_code == 403
    assert RunStore(tmp_path).runs() == []
    # The UI's own pages posting (the same origin, or a browser that names none): accepted.
    for headers in ({"Origin": "http://127.0.0.1:4200", "Sec-Fetch-Site": "same-origin"}, {}):
        started = client.post("/flows/greet/run", data={"name": "ann", "csrf_token": token}, headers=headers)
        assert started.status_code == 303, (headers, started.text)
    resumed = client.post("/runs/any-run/resume", data={"csrf_token": token}, headers={"Origin": "http://127.0.0.1:4200"})
    assert resumed.status_code == 404


def test_ui_actions_take_only_forms_carrying_a_csrf_token_of_its_pages(tmp_path, monkeypatch):
    """A `text/plain` POST (which a page elsewhere can send without a preflight) once started a
    run with default parameters; so did a form without a token.  Only a form-encoded POST with
    the token of a page of this UI, bound to that browser's cookie, is an action."""
    import httpx

    from rayflow.store import RunStore
    from rayflow.ui.actions import ServeActions

    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    store = RunStore(tmp_path)
    with uvicorn_server(create_app(tmp_path, ServeActions([greet]))) as url, httpx.Client(base_url=url) as browser:
        plain = browser.post("/flows/greet/run", content="name=mallory", headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415 and "post a form" in plain.text
        assert browser.post("/flows/greet/run", json={"name": "mallory"}).status_code == 415
        no_token = browser.post("/flows/greet/run", data={"name": "mallory"})
        assert no_token.status_code == 403 and "CSRF" in no_token.text
        assert browser.post("/flows/greet/run", data={"name": "mallory", "csrf_token": "0" * 64}).status_code == 403
        for action in ("resume", "cancel", "approve", "reject"):
            assert browser.post(f"/runs/any-run/{action}", data={"csrf_token": ""}).status_code == 403
        assert store.runs() == []
        token = csrf_token(browser.get("/flows").text)
        with httpx.Client(base_url=url) as other:  # another browser: the first one's token is no good to it
            assert other.post("/flows/greet/run", data={"name": "eve", "csrf_token": token}).status_code == 403
        assert store.runs() == []
        started = browser.post("/flows/greet/run", data={"name": "ann", "csrf_token": token}, follow_redirects=False)
        assert started.status_code == 303, started.text
        run_id = started.headers["location"].rsplit("/", 1)[1]
        wait_for(lambda: (store.run(run_id) or {}).get("state") == "SUCCESS")
        assert store.run(run_id)["params"] == {"name": "ann"}


def test_the_ui_answers_only_the_host_names_it_serves(tmp_path, monkeypatch):
    """DNS rebinding: evil.example, re-resolved to 127.0.0.1, reaches the UI with `Host:
    evil.example` and an `Origin` to match; it must get neither a page nor an action."""
    import httpx

    from rayflow.store import RunStore
    from rayflow.ui.actions import ServeActions

    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    greet.with_options(run_id="greeted-1").run(name="ann")
    with uvicorn_server(create_app(tmp_path, ServeActions([greet]))) as url, httpx.Client(base_url=url) as http:
        port = url.rsplit(":", 1)[1]
        evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        for path in ("/", "/runs/greeted-1", "/api/runs", "/api/runs/greeted-1", "/flows"):
            answer = http.get(path, headers=evil)
            assert answer.status_code == 400 and "greeted-1" not in answer.text, path
        page = http.get("/flows")
        token = csrf_token(page.text) if "csrf_token" in page.text else ""
        posted = http.post("/flows/greet/run", data={"name": "mallory", "csrf_token": token}, headers=evil)
        assert posted.status_code == 400
        assert [r["run_id"] for r in RunStore(tmp_path).runs()] == ["greeted-1"]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "127.0.0.1"):
            assert http.get("/runs/greeted-1", headers={"Host": host}).status_code == 200, host
    # --allowed-host NAME (a proxy's name, or the machine's for --host 0.0.0.0): that name too.
    named = TestClient(create_app(tmp_path, host="0.0.0.0", allowed_hosts=["ui.example.org", "*.corp.example"]), base_url="http://ui.example.org")
    assert named.get("/runs/greeted-1").status_code == 200
    assert named.get("/runs/greeted-1", headers={"Host": "a.corp.example:4200"}).status_code == 200
    assert named.get("/runs/greeted-1", headers={"Host": "evil.example"}).status_code == 400
    assert named.get("/runs/greeted-1", headers={"Host": "0.0.0.0:4200"}).status_code == 400


def test_every_response_forbids_framing_and_sniffing(tmp_path, monkeypatch):
    """Every response, a 500 among them (Starlette's own came from outside the middleware,
    without the headers: found in review)."""
    import httpx

    from rayflow.store import RunStore

    def broken(self, run_id):
        raise RuntimeError("the history broke")

    monkeypatch.setattr(RunStore, "run", broken)  # every run page fails inside the app
    with uvicorn_server(create_app(tmp_path)) as url, httpx.Client(base_url=url) as http:
        answers = {
            path: http.get(path) for path in ("/", "/flows", "/api/runs", "/runs/nope", "/api/runs/nope", "/runs?page=x", "/static/htmx.min.js", "/nowhere")
        }
        answers["foreign host"] = http.get("/", headers={"Host": "evil.example"})
        answers["read-only POST"] = http.post("/flows/f/run", data={})
    assert {name: a.status_code for name, a in answers.items()} == {
        "/": 200, "/flows": 200, "/api/runs": 200, "/runs/nope": 500, "/api/runs/nope": 500, "/runs?page=x": 400,
        "/static/htmx.min.js": 200, "/nowhere": 404, "foreign host": 400, "read-only POST": 403,
    }
    assert "the history broke" not in answers["/runs/nope"].text
    for name, answer in answers.items():
        assert answer.headers.get("x-frame-options") == "DENY", name
        assert answer.headers.get("x-content-type-options") == "nosniff", name
        assert "frame-ancestors 'none'" in answer.headers.get("content-security-policy", ""), name


UI_TOKEN = "rf-ui-t0ken-5c9e1f7a3b"


def _rayflow_ui(home: pathlib.Path, port: int, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rayflow", "ui", "--port", str(port), *args], cwd=REPO, text=True,
        env={**os.environ, "RAYFLOW_HOME": str(home), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@pytest.mark.timeout(180)
def test_with_a_token_every_page_api_call_and_action_needs_it(tmp_path, monkeypatch):
    """`RAYFLOW_UI_TOKEN=... rayflow ui`: without the token a page is the login page (401), the
    JSON and actions are 401; `Authorization: Bearer` or the login page's cookie let one in; the
    token itself is in no page, header, URL, cookie or log line, and a wrong one is logged as such."""
    import httpx

    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    greet.with_options(run_id="greeted-1").run(name="ann")
    port = free_port()
    ui = _rayflow_ui(tmp_path, port, RAYFLOW_UI_TOKEN=UI_TOKEN)
    seen: list[str] = []  # every response: status, headers and body

    def keep(response: httpx.Response) -> None:
        response.read()
        seen.append(f"{response.url} {response.status_code} {response.headers!r} {response.text}")

    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, event_hooks={"response": [keep]}) as http:
            wait_for(lambda: _answers(http, "/static/htmx.min.js"), timeout=60, what="rayflow ui to listen")
            assert http.get("/static/htmx.min.js").status_code == 200  # htmx only: public
            page = http.get("/runs/greeted-1")
            assert page.status_code == 401 and 'id="login"' in page.text and "ann" not in page.text
            assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
            for path in ("/", "/flows", "/api/runs", "/api/runs/greeted-1", "/runs/greeted-1?level=ERROR"):
                answer = http.get(path, headers={"Accept": "application/json"} if "api" in path else {})
                assert answer.status_code == 401 and "greeted-1" not in answer.text.replace("value=\"/runs/greeted-1", ""), path
            api = http.get("/api/runs")
            assert api.status_code == 401 and api.headers["www-authenticate"].startswith("Bearer") and "error" in api.json()
            assert http.post("/flows/greet/run", data={"name": "x"}).status_code == 401
            for wrong in ("Bearer nope", f"Bearer {UI_TOKEN}x", f"Basic {UI_TOKEN}", f"Bearer {UI_TOKEN[:-1]}"):
                assert http.get("/api/runs", headers={"Authorization": wrong}).status_code == 401, wrong
            bearer = {"Authorization": f"Bearer {UI_TOKEN}"}
            assert [r["run_id"] for r in http.get("/api/runs", headers=bearer).json()] == ["greeted-1"]
            assert http.get("/", headers={**bearer, "Host": "evil.example"}).status_code == 400  # the host check first
            assert http.post("/flows/greet/run", data={"name": "x"}, headers=bearer).status_code == 403  # read-only, past the gate

            login = http.get("/login")
            assert login.status_code == 200 and 'type="password"' in login.text
            form = {"csrf_token": csrf_token(login.text), "next": "/runs/greeted-1"}
            wrong = http.post("/login", data={**form, "token": "not-the-token-at-all"})
            assert wrong.status_code == 401 and 'id="login-error"' in wrong.text
            assert not [c for c in wrong.headers.get_list("set-cookie") if c.startswith("rayflow_session_")]
            assert http.post("/login", data={**form, "token": UI_TOKEN, "csrf_token": "0" * 64}).status_code == 403
            signed_in = http.post("/login", data={**form, "token": UI_TOKEN}, follow_redirects=False)
            assert signed_in.status_code == 303 and signed_in.headers["location"] == "/runs/greeted-1"
            cookie = next(c for c in signed_in.headers.get_list("set-cookie") if c.startswith("rayflow_session_"))
            flags = {part.strip().lower() for part in cookie.split(";")}
            assert {"httponly", "samesite=lax", "path=/"} <= flags
            assert http.get("/runs/greeted-1").status_code == 200 and "ann" in http.get("/runs/greeted-1").text
            assert http.get("/api/runs").status_code == 200
            away = http.post("/login", data={**form, "token": UI_TOKEN, "next": "//evil.example/x"}, follow_redirects=False)
            assert away.headers["location"] == "/"  # never sent to another site
            kept = {f"rayflow_session_{port}": http.cookies[f"rayflow_session_{port}"]}  # a copy of the session
            logout = http.post("/logout", data={"csrf_token": csrf_token(http.get("/").text)}, follow_redirects=False)
            assert logout.status_code == 303
            assert http.get("/runs/greeted-1").status_code == 401  # the cookie is gone
        with httpx.Client(base_url=url, cookies=kept) as copied:
            assert copied.get("/api/runs").status_code == 401  # and the session ended here too
        with httpx.Client(base_url=url, cookies={f"rayflow_session_{port}": "1.0" * 3}) as forged:
            assert forged.get("/api/runs").status_code == 401
    finally:
        ui.terminate()
        out, err = ui.communicate(timeout=30)
    assert "wrong token" in err, err[-2000:]
    everything = [*seen, out, err]
    assert [text[:200] for text in everything if UI_TOKEN in text] == []


def _answers(http, path: str) -> bool:
    import httpx

    try:
        http.get(path)
    except httpx.TransportError:
        return False
    return True


@pytest.mark.timeout(180)
def test_a_ui_beyond_loopback_or_with_a_bad_token_file_does_not_start(tmp_path):
    (tmp_path / "empty.token").write_text("\n")
    (tmp_path / "short.token").write_text("abc\n")
    cases = {
        "ui beyond loopback": ["ui", "--host", "0.0.0.0"],
        "serve --ui beyond loopback": ["serve", "tests/ui_flows.py:shouted", "--interval", "60", "--ui", "--ui-host", "0.0.0.0"],
        "token file missing": ["ui", "--token-file", str(tmp_path / "nofile.token")],
        "token file empty": ["ui", "--token-file", str(tmp_path / "empty.token")],
        "token too short": ["ui", "--token-file", str(tmp_path / "short.token")],
        "serve --ui, token file missing": ["serve", "tests/ui_flows.py:shouted", "--interval", "60", "--ui", "--token-file", str(tmp_path / "no")],
    }
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        outs = dict(zip(cases, pool.map(lambda argv: run_cli(*argv, "--port" if argv[0] == "ui" else "--ui-port", str(free_port()), home=tmp_path, timeout=30), cases.values())))
    for name, out in outs.items():
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), (name, out.stderr[-2000:])
    assert "RAYFLOW_UI_TOKEN" in outs["ui beyond loopback"].stderr and "0.0.0.0" in outs["serve --ui beyond loopback"].stderr
    assert "abc" not in outs["token too short"].stderr  # a token is never echoed, even a bad one


@rf.flow(runner="local")
def signed(token: SecretStr, word: str = "hi") -> str:
    if word == "boom":  # refused while the graph is traced: the run never starts
        raise ValueError("no booms")
    return hello(word)


def test_a_secret_given_to_run_now_is_masked_in_the_history_from_the_first_row(tmp_path, monkeypatch):
    """Run now records the run before it starts: that first row holds the secret as *** too,
    and so does the row of a run that never started (recorded FAILED over it)."""
    from rayflow.store import RunStore
    from rayflow.ui.actions import ServeActions

    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    client = TestClient(create_app(tmp_path, ServeActions([signed])), base_url="http://127.0.0.1:4200", follow_redirects=False)
    form = {"csrf_token": csrf_token(client.get("/flows").text), "token": SECRET, "word": CANARY}
    started = client.post("/flows/signed/run", data=form)
    assert started.status_code == 303, started.text
    run_id = started.headers["location"].rsplit("/", 1)[1]
    wait_for(lambda: (RunStore(tmp_path).run(run_id) or {}).get("state") == "SUCCESS")
    page = client.get(f"/runs/{run_id}").text
    assert "***" in page and has_canary(page) and not leaked(page)
    never = client.post("/flows/signed/run", data={**form, "word": "boom"})
    never_id = never.headers["location"].rsplit("/", 1)[1]
    wait_for(lambda: (RunStore(tmp_path).run(never_id) or {}).get("state") == "FAILED")
    assert RunStore(tmp_path).run(never_id)["params"] == {"token": "***", "word": "boom"}
    contents = snapshot(tmp_path)
    assert has_canary(b"".join(contents.values()))
    assert {name: leaked(data) for name, data in contents.items() if leaked(data)} == {}


def test_a_secret_given_on_the_command_line_stays_the_text_it_was():
    """`-p pin=0123`: a secret is never parsed as JSON (0123 would be a bad number, shown in the error)."""
    import typing

    import pydantic

    from rayflow.cli import parse_params
    from rayflow.core.parameters import takes_text

    assert takes_text(pydantic.SecretStr) and takes_text(typing.Optional[pydantic.SecretStr])
    assert takes_text(pydantic.Secret[str]) and takes_text(pydantic.Secret[bytes])
    assert not takes_text(pydantic.Secret[int]) and not takes_text(int) and not takes_text(list[str])
    model = pydantic.create_model("m", pin=(pydantic.Secret[str], ...), n=(int, ...))
    values = parse_params(["pin=0123", "n=7"], None, model)
    assert values == {"pin": "0123", "n": 7}


# == Run ids and paths under their roots (issue 22: "a run id can write anywhere") ==========
#
# One rule for a run id, wherever it comes from (Python, `run`, `submit`, `resume`, serve's
# fires, the UI's run-now): letters, digits, '.', '_' and '-', 1 to 128 of them, starting with
# a letter or a digit; anything else is refused in one line before any work.  Behind the rule,
# every path the result store, the cache and the history build from a run id, a task key or a
# cache key is checked to stay under its root.

BAD_RUN_IDS = ["../../../escape1", "a/b", " ", "<b>x</b>", ".hidden", "x" * 1000, "", "-rf", "a\nb"]

PERSISTING_FLOWS = '''
import pathlib
import rayflow as rf

pathlib.Path(__file__).with_name("imported").write_text("the flow file was loaded")

@rf.task(persist=True)
def bump(x: int) -> int:
    return x + 1

@rf.flow(persist=True)
def f(n: int = 1) -> int:
    return bump(n)
'''


def refused_run_id(text: str, run_id: str) -> bool:
    """The one message: it names the id (shortened when long) and the rule."""
    shown = repr(run_id) if len(run_id) <= 64 else repr(run_id[:32])
    return f"run id {shown}" in text and "letters, digits, '.', '_' and '-'" in text and "128" in text


def files_under(folder: pathlib.Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def rayflow_cli(args: list[str], cwd: pathlib.Path, home: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAYFLOW_HOME": str(home), "RAY_ADDRESS": "127.0.0.1:9", "PYTHONPATH": str(REPO),
           "RAYFLOW_CONNECT_TIMEOUT": "1"}
    env.pop("RAYFLOW_RESULTS", None)
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    return subprocess.run([sys.executable, "-m", "rayflow", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


@pytest.mark.timeout(300)
def test_run_id_escape_from_the_issue_writes_nothing_and_is_refused_in_one_line(tmp_path):
    """`rayflow run flows.py:f --local --run-id ../../../escape1` on a persisting flow wrote its
    results beside RAYFLOW_HOME.  Now: exit 2, one line naming the id and the rule, the flow's
    file not even loaded, and not one file made anywhere."""
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    (work / "flows.py").write_text(PERSISTING_FLOWS)
    home = tmp_path / "a" / "b" / "home"
    before = files_under(tmp_path)
    out = rayflow_cli(["run", "flows.py:f", "--local", "--run-id", "../../../escape1"], work, home)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr[-2000:])
    assert out.stdout == "" and len(out.stderr.splitlines()) == 1 and out.stderr.startswith("error: "), out.stderr
    assert refused_run_id(out.stderr, "../../../escape1"), out.stderr
    assert files_under(tmp_path) == before  # no escape1, no result store, no history, no marker
    # The same run under a good id persists its result under the store, as it should.
    good = rayflow_cli(["run", "flows.py:f", "--local", "--run-id", "good-1"], work, home)
    assert good.returncode == 0, good.stderr[-2000:]
    assert (home / "results" / "runs" / "good-1" / "bump.pkl").is_file()
    assert not list(tmp_path.rglob("escape1*"))


@pytest.mark.timeout(600)
def test_the_command_line_refuses_a_bad_run_id_before_any_work(tmp_path):
    """`run`, `resume` and `submit` (no cluster needed for the refusal) answer one line, exit 2."""
    (tmp_path / "flows.py").write_text(PERSISTING_FLOWS)
    home = tmp_path / "home"
    cases = [(["run", "flows.py:f", "--local", "--run-id", bad], bad) for bad in BAD_RUN_IDS[:6]]
    cases += [(["resume", bad, "--local"], bad) for bad in ("a/b", "../../../escape1")]
    cases += [(["submit", "flows.py:f", "--run-id", bad, "--address", "http://127.0.0.1:9"], bad)
              for bad in (".hidden", "<b>x</b>")]
    # Refused before any work: in this process (was ten subprocesses; a case that went on to work
    # would make the history or the marker checked below, or fail to reach 127.0.0.1:9 in 1 s).
    outs = [run_cli_in_process(*argv, home=home, cwd=tmp_path, RAY_ADDRESS="127.0.0.1:9", RAYFLOW_CONNECT_TIMEOUT="1")
            for argv, _ in cases]
    wrong = []
    for (argv, bad), out in zip(cases, outs):
        lines = out.stderr.splitlines()
        if out.returncode != 2 or out.stdout or len(lines) != 1 or not refused_run_id(lines[0], bad):
            wrong.append((argv[0], bad[:40], out.returncode, out.stdout[-300:], out.stderr[-600:]))
    assert wrong == []
    assert not (tmp_path / "imported").exists() and not home.exists()


@rf.task(persist=True)
def kept(x: int) -> int:
    return x + 1


@rf.flow(runner="local", persist=True)
def keeps(n: int = 1) -> int:
    return kept(n)


@pytest.mark.parametrize("bad", BAD_RUN_IDS, ids=lambda b: repr(b[:12]))
def test_python_refuses_a_bad_run_id_at_the_call(bad, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "home"))
    for make in (lambda: keeps.with_options(run_id=bad), lambda: rf.flow(run_id=bad)(lambda: None), lambda: rf.resume(bad)):
        with pytest.raises(rf.RayflowError) as raised:
            make()
        assert type(raised.value).__name__ == "RunIdError" and isinstance(raised.value, ValueError)
        assert raised.value.run_id == bad and refused_run_id(str(raised.value), bad)
        assert "\n" not in str(raised.value)
    assert not (tmp_path / "home").exists()


def test_a_run_id_that_bypasses_with_options_is_refused_where_the_run_starts(tmp_path, monkeypatch, ray_session):
    """Options built without validation (``model_construct``) reach the runners: each refuses the
    id before the run starts (nothing recorded, nothing stored), on Ray and in-process alike."""
    from rayflow.core.options import FlowOptions

    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "home"))
    for runner in ("local", "ray"):
        options = FlowOptions.model_construct(**{**keeps.options.model_dump(), "runner": runner, "run_id": "../../../escape1"})
        sneaky = rf.Flow(keeps.fn, options)
        with pytest.raises(rf.RayflowError) as raised:
            sneaky.run(n=1)
        assert type(raised.value).__name__ == "RunIdError", raised.value
    assert not list(tmp_path.rglob("escape1*"))
    from rayflow.store import RunStore

    assert RunStore(tmp_path / "home").runs() == []


def test_generated_run_ids_follow_the_rule():
    """The ids rayflow makes itself: a run's, a serve fire's, a server submitted with
    `submit --serve FILE` (its id names its Ray job and is what `cancel` takes)."""
    from rayflow.cli.submit import serve_id
    from rayflow.paths import new_run_id
    from rayflow.paths import check_run_id
    from rayflow.serving.server import Server

    made = [new_run_id(), Server.__dataclass_fields__["new_run_id"].default()]
    made += [serve_id("flows.toml"), serve_id("conf/café flows.toml"), serve_id("x" * 300 + ".toml")]
    for run_id in made:
        assert check_run_id(run_id) == run_id
    assert serve_id("conf/flows.toml") == "serve-conf-flows"


def test_serve_fires_go_through_the_rule(tmp_path, monkeypatch):
    """A fire starts its run with serving.launcher.run_in_thread: a bad id is refused there, at
    once.  (The UI's run now makes its own id, 12 hex digits, and starts it with with_options,
    which test_python_refuses_a_bad_run_id_at_the_call covers; test_generated_run_ids_follow_the_rule
    checks the ids rayflow makes.)"""
    from rayflow.serving.launcher import run_in_thread

    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "home"))
    with pytest.raises(rf.RayflowError) as raised:
        run_in_thread(keeps, {}, "../../../escape1")
    assert type(raised.value).__name__ == "RunIdError"
    handle = run_in_thread(keeps, {"n": 2}, "fired-1")
    while not handle.done():
        handle._thread.join(1)
    assert handle.state() == "SUCCESS"


def legacy_run(home: pathlib.Path, good: str, bad: str) -> None:
    """Rename a recorded run to an id an older rayflow accepted and this one would refuse."""
    import sqlite3

    with sqlite3.connect(home / "history.db") as db:
        for table in ("runs", "run_attempts", "transitions", "chunks", "logs", "graphs"):
            db.execute(f"UPDATE {table} SET run_id = ? WHERE run_id = ?", (bad, good))


@rf.task
def breaks(x: int) -> int:
    raise RuntimeError(f"broken by {x}")


@rf.flow(runner="local")
def broken(n: int = 1) -> int:
    return breaks(n)


@pytest.mark.timeout(300)
def test_runs_recorded_under_a_bad_id_by_an_older_rayflow_can_be_read_not_resumed(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("RAYFLOW_HOME", str(home))
    assert broken.with_options(run_id="old-1").run(n=3).state.is_failed()
    legacy_run(home, "old-1", "a/b")
    for argv, shows in ((["show", "a/b"], "a/b"), (["show", "a/b", "--json"], "a/b"), (["logs", "a/b"], "broken by 3"),
                        (["runs"], "a/b")):
        out = rayflow_cli(argv, tmp_path, home)
        assert out.returncode in (0, 1) and "Traceback" not in out.stderr, (argv, out.stderr[-2000:])
        assert shows in out.stdout, (argv, out.stdout)
    resumed = rayflow_cli(["resume", "a/b", "--local"], tmp_path, home)
    assert resumed.returncode == 2 and len(resumed.stderr.splitlines()) == 1, resumed.stderr
    assert refused_run_id(resumed.stderr, "a/b")
    with pytest.raises(rf.RayflowError) as raised:
        rf.resume("a/b", broken)
    assert type(raised.value).__name__ == "RunIdError"


def test_the_containment_helper_refuses_paths_that_leave_their_root(tmp_path):
    from rayflow.paths import UnsafePathError, under_root

    root = str(tmp_path / "store")
    assert under_root(root, "runs/r-1/t.pkl") == f"{root}/runs/r-1/t.pkl"
    assert under_root(root + "/", "cache/") == f"{root}/cache/"
    assert under_root("s3://bucket/prefix", "runs/r/t") == "s3://bucket/prefix/runs/r/t"
    for bad in ("../x", "runs/../../x", "runs/r/../../../x", "/etc/passwd", "a/./b", "..", ".", "runs/.."):
        with pytest.raises(UnsafePathError) as raised:
            under_root(root, bad)
        assert isinstance(raised.value, rf.ResultStoreError)
        assert raised.value.path == bad and raised.value.root == root
        assert repr(bad) in str(raised.value) and root in str(raised.value)


def test_the_result_store_refuses_to_write_or_read_outside_its_root(tmp_path):
    from rayflow.results import ResultStore

    store = ResultStore(str(tmp_path / "a" / "store"))
    (tmp_path / "secret.pkl").write_bytes(b"not yours")
    before = files_under(tmp_path)
    for bad in ("../../escape", "runs/../../../escape", "/tmp/escape", "runs/../../secret"):
        with pytest.raises(rf.ResultStoreError, match="outside"):
            store.write(bad, 1)
    for bad in ("../../secret.pkl", "runs/../../../secret.pkl"):
        with pytest.raises(rf.ResultStoreError, match="outside"):
            store.read(bad)
        with pytest.raises(rf.ResultStoreError, match="outside"):
            store.read_bytes(bad)
        with pytest.raises(rf.ResultStoreError, match="outside"):
            list(store.list(bad.rsplit("/", 1)[0] + "/"))
        assert store.delete(bad) is False
    assert files_under(tmp_path) == before


@pytest.mark.timeout(300)
def test_a_key_function_returning_a_path_stays_in_the_cache(tmp_path, monkeypatch):
    """A user's cache_key_fn returning '../../x' (a plain task, a mapped one): entries land under
    cache/<flow>/<task key>/ of the store, and a second run hits them."""
    home = tmp_path / "home"
    monkeypatch.setenv("RAYFLOW_HOME", str(home))
    calls = tmp_path / "calls"

    @rf.task(cache_key_fn=lambda context, arguments: "../../../../x")
    def once(x: int) -> int:
        with open(calls, "a") as fh:
            fh.write("once\n")
        return x + 1

    @rf.task(cache_key_fn=lambda context, arguments: f"../../../../item-{arguments['x']}")
    def each(x: int) -> int:
        return x * 2

    @rf.flow(runner="local")
    def keyed(n: int = 1) -> list:
        return [once(n), each.map([1, 2, 3])]

    before = files_under(tmp_path)
    assert keyed.run(n=1).result() == [2, [2, 4, 6]]
    assert keyed.run(n=1).result() == [2, [2, 4, 6]]
    assert calls.read_text() == "once\n"  # the second run hit the entry
    made = files_under(tmp_path) - before
    outside = sorted(p for p in made if not (p == "home" or p.startswith("home/") or p == "calls"))
    assert outside == []
    entries = [p for p in made if p.startswith("home/results/")]
    assert entries and all((p + "/").startswith("home/results/cache/keyed/") or p.count("/") <= 2 for p in entries), entries
    assert not list(tmp_path.rglob("x.pkl")) and not list(tmp_path.rglob("item-*"))


@pytest.mark.parametrize("name", ["..", ".", "a\nb", "a\x00b"])
def test_a_task_or_flow_named_dot_dot_is_refused_at_definition(name):
    """Names become task keys, and keys folders of the result store (runs/<run id>/<task key>,
    cache/<flow>/<task key>/): a subflow named '..' three deep sent a persisted result
    above the store's root.  The same rule for a name taken from the function's ``__name__``
    (a task whose ``__name__`` was '..' wrote runs/<id>/...pkl; one with a NUL failed its run
    only when its result was written)."""
    with pytest.raises(rf.TaskOptionError):
        rf.task(name=name)(lambda x: x)
    with pytest.raises(rf.TaskOptionError):
        rf.flow(name=name)(lambda: None)
    with pytest.raises(rf.TaskOptionError):
        keeps.with_options(name=name)

    def renamed(x=1):
        return x

    renamed.__name__ = name
    with pytest.raises(rf.TaskOptionError):
        rf.task(renamed)
    with pytest.raises(rf.TaskOptionError):
        rf.flow(renamed)


def test_task_keys_that_climb_are_refused_by_the_worker_writes(tmp_path):
    """Defence in depth below the names' rule: the worker's cache and persist writes with a task
    key (or a flow name) of '..' segments write nothing outside the store, and never fail a task."""
    from rayflow.engine.protocol import ResultPolicy
    from rayflow.engine.worker import results
    from rayflow.engine.worker.execute import _store

    store = tmp_path / "deep" / "er" / "store"
    policy = ResultPolicy(str(store), "flow", "t", persist=True, cache_key_fn=lambda c, a: "k")
    before = files_under(tmp_path)
    for key in ("../../../../../x", "a/../../../../../x"):
        assert results.keep(policy, key, results.Lookup(key="k"), 1) is None  # a warning, not written
        path, error = _store(results.to_persist(policy, "r-1", key), 1)
        assert path is None and "outside" in error
    climbing = ResultPolicy(str(store), "../../../..", "t", persist=False, cache_key_fn=lambda c, a: "k")
    assert results.keep(climbing, "t", results.Lookup(key="k"), 1) is None
    assert files_under(tmp_path) == before


def test_the_history_keeps_its_pending_rows_under_its_folder(tmp_path):
    from rayflow.store import RunStore

    history = RunStore(tmp_path / "deep" / "home")
    before = files_under(tmp_path)
    with pytest.raises(OSError) as raised:
        history.spill("../../../escape", {"runs": []})
    assert type(raised.value).__name__ == "UnsafePathError"
    assert files_under(tmp_path) - before <= {"deep/home/history-pending"}
    assert not list(tmp_path.rglob("escape*"))


def test_bad_paging_values_are_400_never_a_500_with_a_traceback(tmp_path, caplog):
    """Found from outside: `/api/runs?page=99999999999999999999` was a 500 with a traceback in
    the server's log (SQLite's integer overflow).  Over a real uvicorn server: 400 with the
    reason, on the page and the JSON alike, and nothing logged at ERROR (tests/test_ui.py
    checks every other query value)."""
    import httpx

    with caplog.at_level("WARNING"), uvicorn_server(create_app(tmp_path)) as url:
        answers = [httpx.get(f"{url}{path}") for path in (
            "/api/runs?page=99999999999999999999", "/runs?page=99999999999999999999", "/api/runs?page=-3")]
    assert [a.status_code for a in answers] == [400, 400, 400], [a.text[:200] for a in answers]
    assert "page must be a whole number from 1 to" in answers[0].json()["error"]
    assert [r.getMessage()[:200] for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []


def test_the_ui_token_reaches_no_run_job_or_worker(tmp_path):
    """Found in review: `rayflow submit` forwards RAYFLOW_* settings to the job, the UI's token
    among them (export RAYFLOW_UI_TOKEN=..., then submit, as the README's walkthrough does),
    and a run's tasks inherited it.  The CLI takes it out of its environment before any command
    runs; submit never forwards it."""
    from rayflow.runtime.driver.jobs import forwarded_env

    assert forwarded_env({"RAYFLOW_UI_TOKEN": UI_TOKEN, "RAYFLOW_LOG_LEVEL": "INFO"}) == {"RAYFLOW_LOG_LEVEL": "INFO"}
    seen = tmp_path / "seen.txt"
    (tmp_path / "peek.py").write_text(
        "import os\nimport rayflow as rf\n\n"
        "@rf.task\ndef peek(path: str) -> str:\n"
        "    open(path, 'w').write(os.environ.get('RAYFLOW_UI_TOKEN', 'absent'))\n    return path\n\n"
        "@rf.flow\ndef peeking(path: str) -> str:\n    return peek(path)\n"
    )
    done = run_cli("run", f"{tmp_path}/peek.py:peeking", "-p", f"path={seen}", "--local", home=tmp_path / "home",
                   RAYFLOW_UI_TOKEN=UI_TOKEN)
    assert done.returncode == 0, done.stderr[-2000:]
    assert seen.read_text() == "absent"
