"""A run's page (``/runs/{run_id}``): its summary, graph, timeline, tasks, failed items and logs;
and, under ``serve --ui``, its cancel and resume."""

from __future__ import annotations

import os
from typing import Any

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from rayflow.exceptions import RayflowError
from rayflow.presentation import UNFINISHED
from rayflow.store.views import task_rows, trace_url
from rayflow.ui import queries
from rayflow.ui.context import UI
from rayflow.ui.queries import LEVELS, QueryError
from rayflow.ui.svg import graph_svg, timeline_svg

RAY_DASHBOARD_URL = "http://localhost:8265"
ITEMS_SHOWN = 20  # item rows of a map on its run's page; /api/runs/{id}/items pages the rest


def routes(ui: UI) -> list[Route]:
    store, actions = ui.store, ui.actions

    async def run_page(request: Request) -> Response:
        run = store.run(request.path_params["run_id"])
        if run is None:
            return ui.missing(request, "run", request.path_params["run_id"])
        tasks = task_rows(run)
        try:
            query = queries.logs_query(request.query_params, {t["task"] for t in tasks})
        except QueryError as exc:
            return ui.bad_query(request, exc)
        logs = store.logs(run["run_id"], task=query.task)
        if query.level is not None:  # this level and above
            floor = LEVELS.index(query.level)
            logs = [r for r in logs if r["level"] not in LEVELS or LEVELS.index(r["level"]) >= floor]
        tracebacks = {t["task_key"]: t["traceback"] for t in run["transitions"] if t["traceback"]}
        failed_items = {  # the first page of each map's recorded item rows, where some failed
            t["task"]: store.items(run["run_id"], t["task"], limit=ITEMS_SHOWN) for t in tasks if (t.get("items") or {}).get("failed")
        }
        return ui.page(
            request, "run.html", run=run, tasks=tasks, trace=trace_url(run["trace_id"]), logs=logs[-500:],
            task=query.task, level=query.level, levels=LEVELS, tracebacks=tracebacks, live=run["state"] in UNFINISHED,
            failed_items=failed_items, items_shown=ITEMS_SHOWN,
            graph=Markup(graph_svg(run.get("graph") or {}, tasks)), timeline=Markup(timeline_svg(run, tasks)),
            dashboard=os.environ.get("RAYFLOW_RAY_DASHBOARD_URL", RAY_DASHBOARD_URL).rstrip("/"),
            action_error=actions.error_of(run["run_id"]) if actions is not None else None,
        )

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
        Route("/runs/{run_id}/cancel", on_run(cancel, (RuntimeError,)), methods=["POST"]),
        Route(
            "/runs/{run_id}/resume", on_run(lambda run: actions.resume(run["run_id"], run["flow"]), (KeyError, RayflowError)),
            methods=["POST"],
        ),
    ]
