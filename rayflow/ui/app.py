"""The Starlette application of ``rayflow ui``: routes, and the data each page shows."""

from __future__ import annotations

import os
import pathlib
import time
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rayflow.exceptions import RayflowError
from rayflow.presentation import FAILED, UNFINISHED, category, took, when
from rayflow.store.history import RunStore
from rayflow.store.schedules import ScheduleStore
from rayflow.store.task_table import COLUMNS, cells
from rayflow.store.views import run_record, state_filter, task_rows, trace_url
from rayflow.ui import queries, security
from rayflow.ui.queries import LEVELS, PAGE_SIZE, SINCE, STATES, QueryError
from rayflow.ui.security import LOGIN_PATH, Csrf, SecurityHeaders, Sessions, TokenGate
from rayflow.ui.svg import graph_svg, timeline_svg

logger = logging.getLogger("rayflow.ui")

HERE = pathlib.Path(__file__).parent
RAY_DASHBOARD_URL = "http://localhost:8265"
FORM_TYPE = "application/x-www-form-urlencoded"
ITEMS_SHOWN = 20  # item rows of a map on its run's page; /api/runs/{id}/items pages the rest


def create_app(
    home: str | pathlib.Path | None = None,
    actions: Any = None,
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    allowed_hosts: Sequence[str] = (),
) -> Starlette:
    """The UI over ``home``'s history; ``actions`` (``ui.actions.ServeActions``, given by ``rayflow
    serve --ui``) adds run now, cancel and resume; without them every page is read-only.  It answers
    the ``Host`` names of ``security.allowed_hosts(host, allowed_hosts)`` only; with ``token``,
    only requests that carry it (``security``)."""
    store = RunStore(home)
    sessions = Sessions(token) if token is not None else None
    csrf = Csrf()
    templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    templates.filters["when"] = when
    templates.filters["took"] = lambda row: took(row.get("started_at"), row.get("finished_at"))
    templates.globals["state_class"] = category
    templates.globals["failed_states"] = FAILED
    templates.globals["task_columns"] = COLUMNS  # the run's task table: one definition with the CLI's
    templates.globals["task_cells"] = cells
    templates.globals["zip"] = zip

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        form_token, cookie = csrf.token(request)
        text = templates.get_template(name).render(
            actions=actions, csrf_token=form_token, login=sessions is not None, **context,
        )
        response = HTMLResponse(text, status_code=status)
        if cookie is not None:
            response.headers.append("set-cookie", cookie)
        return response

    def bad_query(request: Request, exc: QueryError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=400)
        return page(request, "error.html", 400, message=str(exc))

    def login_page(request: Request, status: int = 200, next_path: str = "/", message: str | None = None) -> Response:
        return page(request, "login.html", status, next_path=_local_path(next_path), message=message)

    async def runs_page(request: Request) -> Response:
        try:
            query = queries.runs_query(request.query_params)
        except QueryError as exc:
            return bad_query(request, exc)
        runs, more = _runs(store, query)
        for r in runs:
            r["trace_url"] = trace_url(r["trace_id"])
        context = {
            "runs": runs, "flow": query.flow, "state": query.state, "page": query.page, "more": more, "states": STATES,
            "since": query.since, "sinces": list(SINCE),
            "flows": _flow_names(store), "live": any(r["state"] in UNFINISHED for r in runs),
        }
        if request.headers.get("HX-Request"):  # a live refresh: the table only
            return page(request, "runs_table.html", **context)
        return page(request, "runs.html", **context)

    async def run_page(request: Request) -> Response:
        run = store.run(request.path_params["run_id"])
        if run is None:
            return page(request, "missing.html", 404, run_id=request.path_params["run_id"])
        tasks = task_rows(run)
        try:
            query = queries.logs_query(request.query_params, {t["task"] for t in tasks})
        except QueryError as exc:
            return bad_query(request, exc)
        logs = store.logs(run["run_id"], task=query.task)
        if query.level is not None:  # this level and above
            floor = LEVELS.index(query.level)
            logs = [r for r in logs if r["level"] not in LEVELS or LEVELS.index(r["level"]) >= floor]
        tracebacks = {t["task_key"]: t["traceback"] for t in run["transitions"] if t["traceback"]}
        failed_items = {  # the first page of each map's recorded item rows, where some failed
            t["task"]: store.items(run["run_id"], t["task"], limit=ITEMS_SHOWN) for t in tasks if (t.get("items") or {}).get("failed")
        }
        return page(
            request, "run.html", run=run, tasks=tasks, trace=trace_url(run["trace_id"]), logs=logs[-500:],
            task=query.task, level=query.level, levels=LEVELS, tracebacks=tracebacks, live=run["state"] in UNFINISHED,
            failed_items=failed_items, items_shown=ITEMS_SHOWN,
            graph=Markup(graph_svg(run.get("graph") or {}, tasks)), timeline=Markup(timeline_svg(run, tasks)),
            dashboard=os.environ.get("RAYFLOW_RAY_DASHBOARD_URL", RAY_DASHBOARD_URL).rstrip("/"),
            action_error=actions.error_of(run["run_id"]) if actions is not None else None,
        )

    async def flows_page(request: Request) -> Response:
        recent = store.runs(limit=1000)
        by_flow: dict[str, list[dict]] = {}
        for r in recent:
            by_flow.setdefault(r["flow"], []).append(r)
        schedules = ScheduleStore(store).schedules()
        served = {name: actions.parameters(name) for name in actions.names()} if actions is not None else {}
        return page(request, "flows.html", flows=sorted(by_flow.items()), schedules=schedules, served=served)

    async def refused(request: Request) -> Response | None:
        """Why a POST action is not taken (None: it may be), after reading its form."""
        if actions is None:
            return _read_only()
        if actions.starting():
            return PlainTextResponse(
                "starting: the server is joining Ray; try again in a moment", status_code=503, headers={"Retry-After": "2"},
            )
        return await _refused_post(request, csrf)

    async def run_now(request: Request) -> Response:
        if (no := await refused(request)) is not None:
            return no
        name = request.path_params["flow"]
        form = await request.form()
        texts = {k: str(v) for k, v in form.items() if v != "" and k != "csrf_token"}
        try:
            run_id = await run_in_threadpool(lambda: actions.run_now(name, text=texts))
        except (KeyError, RayflowError) as exc:
            return page(request, "error.html", 400, message=str(exc).strip("'\""))
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    def on_run(act: Any, errors: tuple[type[BaseException], ...]) -> Any:
        """A POST on a recorded run: 403 without actions, 404 for an unknown run, 409 with the
        reason when ``act(run)`` raises one of ``errors``, else back to the run's page."""

        async def route(request: Request) -> Response:
            if (no := await refused(request)) is not None:
                return no
            run = store.run(request.path_params["run_id"])
            if run is None:
                return page(request, "missing.html", 404, run_id=request.path_params["run_id"])
            try:
                await run_in_threadpool(act, run)
            except errors as exc:  # shown to the person who asked
                return page(request, "error.html", 409, message=str(exc).strip("'\""))
            return RedirectResponse(f"/runs/{run['run_id']}", status_code=303)

        return route

    def cancel(run: dict) -> None:
        try:
            actions.cancel(run["run_id"])
        except Exception as exc:  # noqa: BLE001 - a lookup, a cluster that does not answer
            raise RuntimeError(f"run {run['run_id']} could not be cancelled: {exc}") from exc

    async def api_runs(request: Request) -> Response:
        try:
            query = queries.runs_query(request.query_params)
        except QueryError as exc:
            return bad_query(request, exc)
        runs, _ = _runs(store, query)
        return JSONResponse(runs)

    async def api_run(request: Request) -> Response:
        run = store.run(request.path_params["run_id"])
        if run is None:
            return JSONResponse({"error": f"no run {request.path_params['run_id']!r}"}, status_code=404)
        return JSONResponse(run_record(run))

    async def api_items(request: Request) -> Response:
        """A page of a map's item rows (?task=KEY, &state=, &after=INDEX, &limit=N up to 1000):
        the items that did not succeed or were run again, as the engine recorded them."""
        run_id, params = request.path_params["run_id"], request.query_params
        try:
            if not params.get("task"):
                raise ValueError("task is required: ?task=KEY, the map's task key")
            after, limit = int(params.get("after", -1)), int(params.get("limit", 100))
            if not 0 <= limit <= 1000:
                raise ValueError(f"limit is 0 to 1000, not {limit}")
            state = state_filter(params.get("state"))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if store.run_state(run_id) is None:
            return JSONResponse({"error": f"no run {run_id!r}"}, status_code=404)
        return JSONResponse(store.items(run_id, params["task"], state=state, after=after, limit=limit))

    async def login(request: Request) -> Response:
        if sessions is None:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return login_page(request, next_path=request.query_params.get("next") or "/")
        if (no := await _refused_post(request, csrf)) is not None:
            return no
        form = await request.form()
        given, next_path = form.get("token"), _local_path(str(form.get("next") or "/"))
        if not isinstance(given, str) or not sessions.matches(given):
            logger.warning("rayflow ui: a wrong token at the login page from %s (401)", request.client.host if request.client else "?")
            return login_page(request, 401, next_path=next_path, message="That is not this UI's token.")
        response = RedirectResponse(next_path, status_code=303)
        response.headers.append("set-cookie", sessions.login_cookie(request))
        return response

    async def logout(request: Request) -> Response:
        if (no := await _refused_post(request, csrf)) is not None:
            return no
        response = RedirectResponse(LOGIN_PATH if sessions is not None else "/", status_code=303)
        if sessions is not None:
            response.headers.append("set-cookie", sessions.logout_cookie(request))
        return response

    routes = [
        Route("/", runs_page),
        Route("/runs/{run_id}", run_page),
        Route("/flows", flows_page),
        Route("/api/runs", api_runs),
        Route("/api/runs/{run_id}", api_run),
        Route("/api/runs/{run_id}/items", api_items),
        Route(LOGIN_PATH, login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/flows/{flow}/run", run_now, methods=["POST"]),
        Route("/runs/{run_id}/cancel", on_run(cancel, (RuntimeError,)), methods=["POST"]),
        Route(
            "/runs/{run_id}/resume", on_run(lambda run: actions.resume(run["run_id"], run["flow"]), (KeyError, RayflowError)),
            methods=["POST"],
        ),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [  # outermost first: every response gets the headers, the host check comes before the token
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=security.allowed_hosts(host, allowed_hosts), www_redirect=False),
    ]
    if sessions is not None:
        middleware.append(Middleware(TokenGate, sessions=sessions, login_page=login_page))
    return Starlette(routes=routes, middleware=middleware)


def _read_only() -> Response:
    return PlainTextResponse("read-only: actions need the UI of `rayflow serve --ui`", status_code=403)


async def _refused_post(request: Request, csrf: Csrf) -> Response | None:
    """Why a POST is refused: not a form (415), posted from another site's page, or without the
    CSRF token of a page of this UI (403); None: it may go on.  A request with a Bearer token
    is a script's (a browser never adds one for another site): it needs no CSRF token."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        return PlainTextResponse(f"unsupported content type {content_type or 'none'!r}: post a form ({FORM_TYPE})", status_code=415)
    if _cross_origin(request):
        return PlainTextResponse("refused: this action was posted from another site's page", status_code=403)
    if request.scope.get("state", {}).get("auth") == "bearer":
        return None
    form = await request.form()
    given = form.get("csrf_token")
    if not csrf.valid(request, given if isinstance(given, str) else None):
        return PlainTextResponse("refused: no valid CSRF token (reload the page and try again)", status_code=403)
    return None


def _cross_origin(request: Request) -> bool:
    """Whether a browser sent this POST from another site's page (cross-site request forgery:
    a page elsewhere posting a form to http://127.0.0.1:4200/...).  Browsers name the page's
    origin in ``Origin`` (and ``Sec-Fetch-Site``).  The ``Host`` it is compared with has passed
    the host check, so a rebound name cannot make the two agree."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == "null" or urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


def _local_path(path: str) -> str:
    """Where to go after the login: a path of this UI, never another site (``//evil``, ``/\\evil``)."""
    if not path.startswith("/") or path.startswith(("//", "/\\")) or any(c in path for c in "\r\n\\") or len(path) > 2000:
        return "/"
    return path


def _runs(store: RunStore, query: queries.RunsQuery) -> tuple[list[dict], bool]:
    """One page of runs, newest first, and whether there are more: reads that page's rows only."""
    after = time.time() - SINCE[query.since] if query.since else None
    runs = store.runs(flow=query.flow, state=query.state, limit=PAGE_SIZE + 1, offset=query.offset, since=after)
    return runs[:PAGE_SIZE], len(runs) > PAGE_SIZE


def _flow_names(store: RunStore) -> list[str]:
    return store.flows()

