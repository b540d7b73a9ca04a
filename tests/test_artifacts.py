"""Artifacts (rf.artifacts): recorded by real runs on Ray and in-process (in a map's items too, by a
failing task, with bad arguments that never fail the run), versioned by key, shown by the UI's
pages, fragment and JSON (escaped, markdown safe, tables cut) and by `rayflow artifacts`."""

from __future__ import annotations

import json
import re
import warnings

import pytest
from artifact_flows import reporting, tiny_png
from cli_runner import run_cli_in_process
from starlette.testclient import TestClient

import rayflow as rf
from rayflow.engine.worker import artifacts as api
from rayflow.engine.worker.logs import capture
from rayflow.store import RunStore
from rayflow.ui import create_app
from rayflow.ui.artifact_render import render_markdown, safe_url

BASE = "http://127.0.0.1:4200"


@pytest.fixture(scope="module")
def history(tmp_path_factory, ray_session):
    home = tmp_path_factory.mktemp("artifacts-home")
    png = home / "picture.png"
    png.write_bytes(tiny_png(5, 4))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(home))
        on_ray = reporting.with_options(runner="ray").run(label="ray", png_path=str(png))
        local = reporting.with_options(runner="local").run(label="local", png_path=str(png))
        failed = reporting.with_options(runner="local").run(label="failed", png_path=str(png), fail=True)
    store = RunStore(home)
    return {
        "home": home, "store": store, "ray": on_ray, "local": local, "failed": failed,
        "client": TestClient(create_app(home), base_url=BASE),
    }


def by_kind(rows: list[dict], task: str = "report") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        if row["task_key"] == task:
            out.setdefault(row["kind"], []).append(row)
    return out


@pytest.mark.parametrize("which", ["ray", "local"])
def test_every_kind_is_recorded_with_its_run_task_and_map_index(history, which):
    run = history[which]
    assert run.state.type.value == "SUCCESS"  # six bad calls, and the run did not fail
    store = history["store"]
    rows = store.run_artifacts(run.run_id)
    kinds = by_kind(rows)
    assert sorted(kinds) == ["image", "link", "markdown", "progress", "table"]
    assert len(kinds["image"]) == 2 and {i["data"]["width"] for i in kinds["image"]} == {3, 5}
    assert len(kinds["progress"]) == 1 and kinds["progress"][0]["data"] == {"fraction": 1.0}  # the later call won
    assert kinds["table"][0]["data"]["rows"] == [["<b>Oslo</b>", 12, None], ["Bergen", 7.5, None]]
    assert kinds["link"][0]["data"] == {"url": "https://example.com/dash?a=1&b=2", "text": "the <dashboard>"}
    assert all(r["run_id"] == run.run_id and r["run_attempt"] == 1 for r in rows)
    items = sorted((r["map_index"], r["data"]["text"]) for r in rows if r["task_key"] == "item")
    assert items == [(0, "item **0**"), (1, "item **1**"), (2, "item **2**")]
    # Each bad argument is one ERROR record of the task naming it; nothing of it was recorded.
    errors = [r["message"] for r in store.logs(run.run_id, task="report") if r["level"] == "ERROR"]
    assert len(errors) == 6, errors
    for expected in ("progress: fraction must be from 0 to 1, not 1.5", "image: the image is not a PNG",
                     "image: cannot read the image", "table: rows must be a list of dicts", "markdown: key 'bad key!' is not",
                     "link: url must be an http or https address"):
        assert sum(expected in e for e in errors) == 1, expected
    assert all(e.endswith("the artifact is not recorded") for e in errors)


def test_a_failing_task_keeps_its_artifacts_and_only_it_fails_the_run(history):
    failed = history["failed"]
    assert failed.state.type.value == "FAILED"
    rows = history["store"].run_artifacts(failed.run_id, task="breaks")
    assert [r["data"]["text"] for r in rows] == ["written before the failure"]


def test_keys_are_versioned_across_runs_and_progress_has_one_row_per_run(history):
    store = history["store"]
    versions = store.artifact_versions("report")
    runs = [history[k].run_id for k in ("ray", "local", "failed")]
    assert [v["version"] for v in versions] == [3, 2, 1] and [v["run_id"] for v in versions] == runs[::-1]
    assert [v["latest"] for v in versions] == [1, 0, 0]
    assert [v["version"] for v in store.artifact_versions("per-item")] == list(range(9, 0, -1))
    load = store.artifact_versions("load")
    assert len(load) == 3 and {v["summary"] for v in load} == {"100%"}
    latest = {a["key"]: a for a in store.latest_artifacts(limit=100)}
    assert set(latest) == {"report", "cities", "picture", "load", "big", "per-item", "before-failure"}
    assert latest["report"]["run_id"] == history["failed"].run_id
    assert store.artifact("report", version=1)["run_id"] == history["ray"].run_id


def test_large_tables_and_markdown_are_cut_with_a_note(history):
    big = history["store"].artifact("big")
    data = big["data"]
    assert len(data["rows"]) == api.MAX_ROWS and len(data["columns"]) == api.MAX_COLUMNS
    assert data["total_rows"] == 1500 and data["total_columns"] == 60
    assert "the first 1000 of 1500 rows and the first 50 of 60 columns" in data["note"]
    assert big["summary"] == "1500 rows × 60 columns"
    text = [r for r in history["store"].run_artifacts(history["local"].run_id, task="big_table") if r["kind"] == "markdown"][0]
    assert len(text["data"]["text"]) == api.MAX_MARKDOWN_CHARS and "cut at 100000 of 100050" in text["data"]["note"]


def test_the_artifacts_pages_list_keys_and_a_keys_history(history):
    client = history["client"]
    page = client.get("/artifacts")
    assert page.status_code == 200
    for key in ("report", "cities", "picture", "load", "big", "per-item"):
        assert f'href="/artifacts/{key}"' in page.text
    one = client.get("/artifacts/report")
    assert one.status_code == 200
    assert one.text.count('href="/artifacts/report?version=') == 3
    for run in ("ray", "local", "failed"):
        assert f'href="/runs/{history[run].run_id}"' in one.text
    first = client.get("/artifacts/report?version=1")
    assert "version 1" in first.text and "Report ray" in first.text
    missing = client.get("/artifacts/no-such-key")
    assert missing.status_code == 404 and "No artifact no-such-key" in missing.text
    assert client.get("/artifacts/report?version=99").status_code == 404
    for bad in ("/artifacts?page=0", "/artifacts?page=x", "/artifacts/report?version=-1", "/artifacts/report?page=1&page=2"):
        answer = client.get(bad)
        assert answer.status_code == 400, bad
    assert "page must be a whole number" in client.get("/artifacts?page=x").text
    assert client.get("/artifacts?page=2").status_code == 200


def test_markdown_is_rendered_without_raw_html_scripts_or_javascript_links(history):
    text = history["client"].get("/artifacts/report").text
    body = text.split("<h1>", 1)[1]
    assert "<h3>Report failed</h3>" in text  # headings under the page's own and "<em>fine</em>" in text
    assert "<script>alert" not in body and "&lt;script&gt;alert('md')&lt;/script&gt;" in body
    assert "<b>raw</b>" not in body and "&lt;b&gt;raw&lt;/b&gt;" in body
    assert "[bad](javascript:alert(1))" in body  # left as text, not a link
    assert 'href="javascript' not in body
    assert '<a href="https://example.com/ok" rel="nofollow noopener noreferrer">good</a>' in body
    assert "<table>" in body  # markdown's own tables


def test_the_run_fragment_shows_every_kind_escaped(history):
    client = history["client"]
    run = history["local"]
    page = client.get(f"/runs/{run.run_id}")
    assert f'hx-get="/runs/{run.run_id}/artifacts"' in page.text  # the run page loads it
    fragment = client.get(f"/runs/{run.run_id}/artifacts")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    text = fragment.text
    assert "&lt;b&gt;Oslo&lt;/b&gt;" in text and "<b>Oslo</b>" not in text  # a table cell
    assert '<td class="num">12</td>' in text and 'table class="data"' in text
    assert '<a href="https://example.com/dash?a=1&amp;b=2" rel="nofollow noopener noreferrer">the &lt;dashboard&gt;</a>' in text
    assert re.search(r'<progress value="1.0" max="1">', text)
    images = re.findall(r'<img src="/artifacts/image/(\d+)" width="(\d+)" height="(\d+)"', text)
    assert sorted((w, h) for _, w, h in images) == [("3", "2"), ("5", "4")]
    png = client.get(f"/artifacts/image/{images[0][0]}")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    assert png.headers["x-content-type-options"] == "nosniff"
    assert client.get("/artifacts/image/999999").status_code == 404
    one_task = client.get(f"/runs/{run.run_id}/artifacts?task=item").text
    assert "item 0" in one_task and "Oslo" not in one_task
    assert "no artifacts from nothing" in client.get(f"/runs/{run.run_id}/artifacts?task=nothing").text
    assert client.get("/runs/no-such-run/artifacts").status_code == 404
    assert client.get(f"/runs/{run.run_id}/artifacts?page=zero").status_code == 400


def test_the_json_api(history):
    client = history["client"]
    latest = client.get("/api/artifacts").json()
    assert {a["key"] for a in latest} >= {"report", "load", "picture"} and all("data" not in a for a in latest)
    versions = client.get("/api/artifacts?key=report").json()
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert client.get("/api/artifacts?key=nope").status_code == 404
    assert client.get("/api/artifacts?page=-3").status_code == 400
    rows = client.get(f"/api/runs/{history['ray'].run_id}/artifacts?task=report").json()
    image = next(r for r in rows if r["kind"] == "image")
    assert image["image_url"] == f"/artifacts/image/{image['artifact_id']}" and "image" not in image
    assert client.get("/api/runs/no-such-run/artifacts").status_code == 404


def test_the_cli_lists_and_shows_artifacts(history):
    home = history["home"]
    listed = run_cli_in_process("artifacts", "ls", "--json", home=home)
    assert listed.returncode == 0
    assert {a["key"] for a in json.loads(listed.stdout)} == {a["key"] for a in history["store"].latest_artifacts(limit=100)}
    of_run = json.loads(run_cli_in_process("artifacts", "ls", "--run", history["ray"].run_id, "--json", home=home).stdout)
    assert {a["kind"] for a in of_run} == {"markdown", "table", "link", "image", "progress"}
    plain = run_cli_in_process("artifacts", "ls", "--key", "report", home=home)
    assert plain.returncode == 0 and plain.stdout.splitlines()[0].split("\t")[:3] == ["key", "version", "kind"]
    assert len(plain.stdout.splitlines()) == 4
    shown = run_cli_in_process("artifacts", "show", "report", home=home)
    assert shown.returncode == 0 and "# Report failed" in shown.stdout and "version 3 of 3" in shown.stdout
    table = run_cli_in_process("artifacts", "show", "big", home=home)
    assert "the first 1000 of 1500 rows" in table.stdout
    assert json.loads(run_cli_in_process("artifacts", "show", "load", "--json", home=home).stdout)["data"] == {"fraction": 1.0}
    for args in (("show", "nope"), ("ls", "--key", "nope"), ("ls", "--run", "no-such-run"), ("show", "report", "--version", "9")):
        missing = run_cli_in_process("artifacts", *args, home=home)
        assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr, args
        assert missing.stderr.startswith("error: no ")


def test_queries_use_their_indexes(history):
    import sqlite3

    db = sqlite3.connect(history["store"].path)
    plans = {
        "latest": "SELECT artifact_id FROM artifacts WHERE latest = 1 ORDER BY at DESC, artifact_id DESC LIMIT 51",
        "key": "SELECT artifact_id FROM artifacts WHERE key = 'report' ORDER BY version DESC LIMIT 51",
        "run": "SELECT artifact_id FROM artifacts WHERE run_id = 'x' ORDER BY artifact_id LIMIT 101",
        "task": "SELECT artifact_id FROM artifacts WHERE run_id = 'x' AND task_key = 'y' ORDER BY artifact_id LIMIT 101",
    }
    for name, sql in plans.items():
        plan = " ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING" in plan and "SCAN artifacts" not in plan.replace("SCAN artifacts USING", ""), (name, plan)
        assert "TEMP B-TREE" not in plan, (name, plan)


# -- without a run: the checks, the limits, the renderer ----------------------------------


def test_outside_a_task_nothing_is_recorded_and_a_warning_says_so():
    with pytest.warns(UserWarning, match="called outside a task: nothing is recorded"):
        rf.artifacts.markdown("hello")
    with pytest.warns(UserWarning, match="fraction must be from 0 to 1.*outside a task"):
        rf.artifacts.progress(2, key="k")


def test_arguments_are_checked_in_a_task_and_the_limits_hold(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside a task: records, never warnings
        with capture("r", "t", None, None, False) as context:
            api.progress(True, key="k")  # a bool is not a fraction
            api.progress(0.5, key="x" * 101)
            api.table({"a": 1})
            api.table([{"a": 1}, [1]])
            api.link("https://ok.example", text=3)
            api.image(b"\x89PNG\r\n\x1a\n" + b"\0" * (api.MAX_IMAGE_BYTES))
            big = tmp_path / "big.png"
            big.write_bytes(tiny_png() + b"\0" * api.MAX_IMAGE_BYTES)
            api.image(big)
            api.table({"a": [1, 2], "b": [3]})
            api.table([])
            for i in range(api.MAX_PER_WORK + 5):
                api.markdown(f"n{i}")
    errors = [r[2] for r in context.records if r[1] == "ERROR"]
    assert len(errors) == 7, errors
    assert "at most 1048576 are kept" in errors[5] and str(big) in errors[6]
    kept = context.artifacts
    assert len(kept) == api.MAX_PER_WORK
    assert json.loads(kept[0][6]) == {"columns": ["a", "b"], "rows": [[1, 3], [2, None]], "total_rows": 2, "total_columns": 2}
    assert json.loads(kept[1][6])["rows"] == []
    dropped = [r[2] for r in context.records if r[1] == "WARNING"]
    assert len(dropped) == 1 and "at most 100" in dropped[0]


def test_cells_are_cut_and_odd_values_become_text():
    import numpy as np

    with capture("r", "t", None, None, False) as context:
        api.table([{"long": "z" * 5000, "nan": float("nan"), "big": 2**70, "obj": object(), "np": np.int64(7)}])
    row = json.loads(context.artifacts[0][6])["rows"][0]
    assert len(row[0]) == api.MAX_CELL_CHARS and row[0].endswith("…")
    assert row[1] == "nan" and row[2] == str(2**70) and row[3].startswith("<object object") and row[4] == 7


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "JAVASCRIPT:alert(1)", " javascript:alert(1)", "java\nscript:alert(1)", "vbscript:x",
    "data:text/html;base64,PHNjcmlwdD4=", "file:///etc/passwd",
])
def test_unsafe_links_are_refused_by_the_renderer(url):
    assert not safe_url(url)
    out = render_markdown(f"[x]({url}) <{url}>")
    assert "href" not in out or 'href="javascript' not in out.lower()
    assert "<a " not in out  # not a link at all


def test_markdown_renders_safely():
    out = render_markdown('<img src=x onerror="alert(1)"> <script>x</script> &#106;avascript:\n\n![i](https://evil.example/p.png)')
    assert "<img" not in out and "<script" not in out and "&lt;script&gt;" in out
    assert render_markdown("[ok](/runs/abc) [m](mailto:a@b.c)").count("<a href=") == 2


def test_the_recorder_writes_reported_artifacts_and_kept_rows_carry_them(tmp_path):
    import socket
    import types

    from rayflow.store import HistoryRecorder

    store = RunStore(tmp_path, repair=True)
    with capture("rec", "t", None, None, False) as context:
        rf.artifacts.markdown("from a report", key="rec-key")
    recorder = HistoryRecorder(store, "rec", "f", {}, ["t"])
    recorder.on_report(work=None, report=types.SimpleNamespace(logs=(), artifacts=tuple(context.artifacts)))
    assert recorder.pending_rows() == 1 and recorder.flush() and recorder.pending_rows() == 0
    recorder.close()
    assert [(a["key"], a["version"], a["data"]["text"]) for a in store.run_artifacts("rec")] == [("rec-key", 1, "from a report")]
    # Rows a writer could not write, in a file (HistoryRecorder._spill), artifacts among them.
    kept = ["kept", 1, 1.0, "link", None, "t", None, "x", json.dumps({"url": "https://x.example", "text": None}), None]
    store.spill(f"kept-1@{socket.gethostname()}:999999999", {
        "runs": [["kept", "f", "{}", "SUCCESS", None, 1.0, 2.0, None, '["t"]', 1]], "transitions": [], "chunks": [],
        "logs": [], "graphs": [], "artifacts": [kept],
    })
    assert store.write_pending() == 2
    assert [a["data"]["url"] for a in store.run_artifacts("kept")] == ["https://x.example"]


def test_a_dataframe_and_a_pyarrow_table_are_tables_cut_alike():
    import pandas as pd
    import pyarrow as pa

    frame = pd.DataFrame({"n": range(1500), "name": [f"<i>{i}</i>" for i in range(1500)], "x": [0.5] * 1500})
    with capture("r", "t", None, None, False) as context:
        rf.artifacts.table(frame, key="frame")
        rf.artifacts.table(pa.Table.from_pandas(frame, preserve_index=False), key="arrow")
        rf.artifacts.table(pa.table({f"c{i}": [i] for i in range(70)}))
    frame_data, arrow_data, wide = (json.loads(a[6]) for a in context.artifacts)
    assert frame_data == arrow_data
    assert frame_data["columns"] == ["n", "name", "x"] and frame_data["rows"][1] == [1, "<i>1</i>", 0.5]
    assert len(frame_data["rows"]) == 1000 and "the first 1000 of 1500 rows" in frame_data["note"]
    assert len(wide["columns"]) == 50 and wide["rows"] == [list(range(50))] and "50 of 70 columns" in wide["note"]
    assert not [r for r in context.records if r[1] == "ERROR"]


def test_with_a_login_token_every_artifact_route_asks_for_it(history):
    token = "t0ken-" + "x" * 30
    client = TestClient(create_app(history["home"], token=token), base_url=BASE)
    image_id = next(a["artifact_id"] for a in history["store"].run_artifacts(history["local"].run_id) if a["kind"] == "image")
    run_id = history["local"].run_id
    paths = ["/artifacts", "/artifacts/report", f"/artifacts/image/{image_id}", f"/runs/{run_id}/artifacts",
             "/api/artifacts", f"/api/runs/{run_id}/artifacts"]
    for path in paths:
        refused = client.get(path)
        assert refused.status_code == 401 and "Report" not in refused.text and b"PNG" not in refused.content, path
        allowed = client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code == 200, path
