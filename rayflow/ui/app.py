"""The Starlette application of ``rayflow ui``: routes, and the data each page shows."""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import time
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rayflow.exceptions import RayflowError
from rayflow.store.history import RunStore, UNFINISHED
from rayflow.store.schedules import ScheduleStore
from rayflow.store.views import FAILED, run_record, task_rows, trace_url
from rayflow.ui.svg import graph_svg, timeline_svg

HERE = pathlib.Path(__file__).parent
PAGE_SIZE = 50
RAY_DASHBOARD_URL = "http://localhost:8265"
STATES = ("SUCCESS", "FAILED", "RUNNING", "PENDING", "CANCELLED", "CRASHED", "TIMED_OUT", "TRIGGER_FAILED", "SKIPPED")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def create_app(home: str | pathlib.Path | None = None, actions: Any = None) -> Starlette:
    """The UI over ``home``'s history; ``actions`` (``ui.actions.ServeActions``, given by ``rayflow
    serve --ui``) adds run now, cancel and resume; without them every page is read-only."""
    store = RunStore(home)
    templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    templates.filters["when"] = _when
    templates.filters["took"] = _took
    templates.globals["state_class"] = _state_class

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(templates.get_template(name).render(actions=actions, **context), status_code=status)

    async def runs_page(request: Request) -> Response:
        flow, state, page_no, since = _filters(request)
        runs, more = _runs(store, flow, state, page_no, since)
        for r in runs:
            r["trace_url"] = trace_url(r["trace_id"])
        context = {
            "runs": runs, "flow": flow, "state": state, "page": page_no, "more": more, "states": STATES,
            "since": since, "sinces": list(SINCE),
            "flows": _flow_names(store), "live": any(r["state"] in UNFINISHED for r in runs),
        }
        if request.headers.get("HX-Request"):  # a live refresh: the table only
            return page("runs_table.html", **context)
        return page("runs.html", **context)

    async def run_page(request: Request) -> Response:
        run = store.run(request.path_params["run_id"])
        if run is None:
            return page("missing.html", 404, run_id=request.path_params["run_id"])
        task = request.query_params.get("task") or None
        level = request.query_params.get("level") or None
        logs = store.logs(run["run_id"], task=task)
        if level in LEVELS:  # this level and above
            logs = [r for r in logs if r["level"] not in LEVELS or LEVELS.index(r["level"]) >= LEVELS.index(level)]
        tracebacks = {t["task_key"]: t["traceback"] for t in run["transitions"] if t["traceback"]}
        tasks = task_rows(run)
        return page(
            "run.html", run=run, tasks=tasks, trace=trace_url(run["trace_id"]), logs=logs[-500:],
            task=task, level=level, levels=LEVELS, tracebacks=tracebacks, live=run["state"] in UNFINISHED,
            graph=Markup(graph_svg(run.get("graph") or {}, tasks)), timeline=Markup(timeline_svg(run, tasks)),
            dashboard=os.environ.get("RAYFLOW_RAY_DASHBOARD_URL", RAY_DASHBOARD_URL).rstrip("/"),
        )

    async def flows_page(request: Request) -> Response:
        recent = store.runs(limit=1000)
        by_flow: dict[str, list[dict]] = {}
        for r in recent:
            by_flow.setdefault(r["flow"], []).append(r)
        schedules = ScheduleStore(store).schedules()
        served = {name: actions.parameters(name) for name in actions.names()} if actions is not None else {}
        return page("flows.html", flows=sorted(by_flow.items()), schedules=schedules, served=served)

    async def run_now(request: Request) -> Response:
        if actions is None:
            return _read_only()
        if _cross_origin(request):
            return _refused_cross_origin()
        name = request.path_params["flow"]
        form = await request.form()
        values = {k: _form_value(v) for k, v in form.items() if v != ""}
        try:
            run_id = actions.run_now(name, values)
        except (KeyError, RayflowError) as exc:
            return page("error.html", 400, message=str(exc).strip("'\""))
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    def on_run(act: Any, errors: tuple[type[BaseException], ...]) -> Any:
        """A POST on a recorded run: 403 without actions, 404 for an unknown run, 409 with the
        reason when ``act(run)`` raises one of ``errors``, else back to the run's page."""

        async def route(request: Request) -> Response:
            if actions is None:
                return _read_only()
            if _cross_origin(request):
                return _refused_cross_origin()
            run = store.run(request.path_params["run_id"])
            if run is None:
                return page("missing.html", 404, run_id=request.path_params["run_id"])
            try:
                act(run)
            except errors as exc:  # shown to the person who asked
                return page("error.html", 409, message=str(exc).strip("'\""))
            return RedirectResponse(f"/runs/{run['run_id']}", status_code=303)

        return route

    def cancel(run: dict) -> None:
        try:
            actions.cancel(run["run_id"])
        except Exception as exc:  # noqa: BLE001 - a lookup, a cluster that does not answer
            raise RuntimeError(f"run {run['run_id']} could not be cancelled: {exc}") from exc

    async def api_runs(request: Request) -> Response:
        flow, state, page_no, since = _filters(request)
        runs, _ = _runs(store, flow, state, page_no, since)
        return JSONResponse(runs)

    async def api_run(request: Request) -> Response:
        run = store.run(request.path_params["run_id"])
        if run is None:
            return JSONResponse({"error": f"no run {request.path_params['run_id']!r}"}, status_code=404)
        return JSONResponse(run_record(run))

    routes = [
        Route("/", runs_page),
        Route("/runs/{run_id}", run_page),
        Route("/flows", flows_page),
        Route("/api/runs", api_runs),
        Route("/api/runs/{run_id}", api_run),
        Route("/flows/{flow}/run", run_now, methods=["POST"]),
        Route("/runs/{run_id}/cancel", on_run(cancel, (RuntimeError,)), methods=["POST"]),
        Route(
            "/runs/{run_id}/resume", on_run(lambda run: actions.resume(run["run_id"], run["flow"]), (KeyError, RayflowError)),
            methods=["POST"],
        ),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes)


def _read_only() -> Response:
    return PlainTextResponse("read-only: actions need the UI of `rayflow serve --ui`", status_code=403)


def _cross_origin(request: Request) -> bool:
    """Whether a browser sent this POST from another site's page (cross-site request forgery:
    a page elsewhere posting a form to http://127.0.0.1:4200/...).  Browsers name the page's
    origin in ``Origin`` (and ``Sec-Fetch-Site``); a client that sends neither (curl, a script)
    is not a browser acting for someone else."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == "null" or urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


def _refused_cross_origin() -> Response:
    return PlainTextResponse("refused: this action was posted from another site's page", status_code=403)


def _form_value(text: str) -> Any:
    """A form field as the CLI reads -p values: JSON where it parses, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


SINCE = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}  # the time filter's choices


def _filters(request: Request) -> tuple[str | None, str | None, int, str | None]:
    flow = request.query_params.get("flow") or None
    state = request.query_params.get("state") or None
    since = request.query_params.get("since") or None
    try:
        page_no = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        page_no = 1
    return flow, state, page_no, since if since in SINCE else None


def _runs(store: RunStore, flow: str | None, state: str | None, page_no: int, since: str | None = None) -> tuple[list[dict], bool]:
    """One page of runs, newest first, and whether there are more."""
    after = time.time() - SINCE[since] if since else None
    runs = store.runs(flow=flow, state=state, limit=page_no * PAGE_SIZE + 1, since=after)
    return runs[(page_no - 1) * PAGE_SIZE : page_no * PAGE_SIZE], len(runs) > page_no * PAGE_SIZE


def _flow_names(store: RunStore) -> list[str]:
    with store._connect() as db:
        return [r["flow"] for r in db.execute("SELECT DISTINCT flow FROM runs ORDER BY flow")]


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _took(run: dict) -> str:
    start, end = run.get("started_at"), run.get("finished_at")
    return "-" if start is None or end is None else f"{end - start:.3f}s"


def _state_class(state: str | None) -> str:
    if state in FAILED or state == "CRASHED":
        return "failed"
    if state in UNFINISHED or state == "RETRYING":
        return "live"
    if state in ("SKIPPED", "CANCELLED"):
        return "muted"
    return "ok"
