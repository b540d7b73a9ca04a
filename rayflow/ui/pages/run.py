"""A run's page (``/runs/{run_id}``): its summary, parameters, attempts, graph (``?collapse=KEY``
folds a subflow into one node), Gantt timeline, tasks, failed items, artifacts and logs (task,
level and text filters); the logs' live tail (``/runs/{run_id}/logs?after=ROW``: only the lines
after the last one seen, and the poller again while the run goes on); and, under ``serve --ui``,
its cancel and resume."""

from __future__ import annotations

import json
import os
import time
from typing import Any
from urllib.parse import quote, urlencode

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from rayflow.exceptions import RayflowError
from rayflow.presentation import UNFINISHED, category, took
from rayflow.store.views import task_rows, trace_url
from rayflow.ui import queries
from rayflow.ui.pages import approvals
from rayflow.ui.context import UI
from rayflow.ui.queries import LEVELS, QueryError
from rayflow.ui.svg import graph_svg, subflows_of, timeline_svg

RAY_DASHBOARD_URL = "http://localhost:8265"
ITEMS_SHOWN = 20  # item rows of a map on its run's page; /api/runs/{id}/items pages the rest
LOG_LINES = 500  # the last log lines a run's page shows (the filters find older ones)


def collapsed_of(request: Request, shape: dict) -> set[str]:
    """The subflows ``?collapse=`` names (each must be one of the graph's)."""
    subflows = set(subflows_of(shape))
    wanted = set(request.query_params.getlist("collapse")) - {""}
    unknown = sorted(wanted - subflows)
    if unknown:
        raise QueryError(f"collapse must name subflows of this run's graph; it has no subflow {unknown[0][:80]!r}")
    return wanted


def routes(ui: UI) -> list[Route]:
    store, actions = ui.store, ui.actions

    async def run_page(request: Request) -> Response:
        run = store.run(request.path_params["run_id"])
        if run is None:
            return ui.missing(request, "run", request.path_params["run_id"])
        tasks = task_rows(run)
        shape = run.get("graph") or {}
        try:
            query = queries.logs_query(request.query_params, {t["task"] for t in tasks})
            collapsed = collapsed_of(request, shape)
        except QueryError as exc:
            return ui.bad_query(request, exc)
        logs = store.log_page(run["run_id"], task=query.task, below=query.below, text=query.text, limit=LOG_LINES)
        tracebacks = {t["task_key"]: t["traceback"] for t in run["transitions"] if t["traceback"]}
        failed_items = {  # the first page of each map's recorded item rows, where some failed
            t["task"]: store.items(run["run_id"], t["task"], limit=ITEMS_SHOWN) for t in tasks if (t.get("items") or {}).get("failed")
        }
        live = run["state"] in UNFINISHED
        maps = [t["items"] for t in tasks if t.get("items")]
        counts = {  # the summary cards: tasks by category, map items
            "failed": sum(category(t["state"]) == "failed" for t in tasks), "live": sum(category(t["state"]) == "live" for t in tasks),
            "map_items": sum(m["total"] for m in maps), "failed_items": sum(m["failed"] for m in maps),
            "duration": took(run["started_at"], time.time() if live else run["finished_at"]),  # a live run's: so far
        }
        return ui.page(
            request, "run.html", run=run, tasks=tasks, trace=trace_url(run["trace_id"]), logs=logs, log_lines=LOG_LINES,
            query=query, levels=LEVELS, tracebacks=tracebacks, live=live, after=logs[-1]["row"] if logs else 0,
            counts=counts, failed_items=failed_items, items_shown=ITEMS_SHOWN, maps={n["key"] for n in shape.get("nodes", []) if n["kind"] == "map"},
            trace_url=trace_url, refresh=f"/runs/{quote(run['run_id'], safe='')}?" + urlencode([("collapse", k) for k in sorted(collapsed)]),
            params=[(name, json.dumps(value)) for name, value in run["params"].items()], collapsed=sorted(collapsed),
            graph=Markup(graph_svg(shape, tasks, run["run_id"], collapsed)),
            timeline=Markup(timeline_svg(run, tasks, time.time() if live else None)),
            dashboard=os.environ.get("RAYFLOW_RAY_DASHBOARD_URL", RAY_DASHBOARD_URL).rstrip("/"),
            action_error=actions.error_of(run["run_id"]) if actions is not None else None,
            pauses=approvals.waiting(ui, run, tasks), may_decide=approvals.may_decide(ui),
        )

    async def log_tail(request: Request) -> Response:
        """The log lines after ``after`` that pass the filters, and the poller for the next
        ones while the run goes on (none once it has ended: the tail stops)."""
        run_id = request.path_params["run_id"]
        state = store.run_state(run_id)
        if state is None:
            return ui.missing(request, "run", run_id)
        try:
            query = queries.logs_query(request.query_params, store.task_keys(run_id) if request.query_params.get("task") else set())
        except QueryError as exc:
            return HTMLResponse(f"<p class='failed'>{Markup.escape(str(exc))}</p>", status_code=400)
        logs = store.log_page(run_id, task=query.task, below=query.below, text=query.text, after=query.after, limit=LOG_LINES)
        text = ui.env.get_template("run_logs.html").render(
            run_id=run_id, logs=logs, query=query, live=state in UNFINISHED, after=logs[-1]["row"] if logs else query.after,
        )
        return HTMLResponse(text)

    def on_run(act: Any, errors: tuple[type[BaseException], ...]) -> Any:
        """A POST on a recorded run: 403 without actions, 404 for an unknown run, 409 with the
        reason when ``act(run)`` raises one of ``errors``, else back to the run's page."""

        async def route(request: Request) -> Response:
            if (no := await ui.refused_action(request)) is not None:
                return no
            run = store.run(request.path_params["run_id"])
            if run is None:
                return ui.missing(request, "run", request.path_params["run_id"])
            try:
                await run_in_threadpool(act, run)
            except errors as exc:  # shown to the person who asked
                return ui.page(request, "error.html", 409, message=str(exc).strip("'\""))
            return RedirectResponse(f"/runs/{run['run_id']}", status_code=303)

        return route

    def cancel(run: dict) -> None:
        try:
            actions.cancel(run["run_id"])
        except Exception as exc:  # noqa: BLE001 - a lookup, a cluster that does not answer
            raise RuntimeError(f"run {run['run_id']} could not be cancelled: {exc}") from exc

    return [
        Route("/runs/{run_id}", run_page),
        Route("/runs/{run_id}/logs", log_tail),
        Route("/runs/{run_id}/cancel", on_run(cancel, (RuntimeError,)), methods=["POST"]),
        Route(
            "/runs/{run_id}/resume", on_run(lambda run: actions.resume(run["run_id"], run["flow"]), (KeyError, RayflowError)),
            methods=["POST"],
        ),
    ]
