"""The JSON under ``/api``: what ``rayflow runs --json`` and ``rayflow show --json`` print."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rayflow.store.views import run_record, state_filter
from rayflow.ui import queries
from rayflow.ui.context import UI
from rayflow.ui.pages.runs import page_of_runs
from rayflow.ui.queries import QueryError


def routes(ui: UI) -> list[Route]:
    store = ui.store

    async def api_runs(request: Request) -> Response:
        try:
            query = queries.runs_query(request.query_params)
        except QueryError as exc:
            return ui.bad_query(request, exc)
        runs, _ = page_of_runs(store, query)
        return JSONResponse(runs)

    async def api_run(request: Request) -> Response:
        run = store.run(request.path_params["run_id"])
        if run is None:
            return ui.missing(request, "run", request.path_params["run_id"])
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
            if not -1 <= after <= 2**62:  # past SQLite's integers: a 400, not a 500
                raise ValueError(f"after is a map index from -1 to {2**62}, not {after}")
            state = state_filter(params.get("state"))
        except ValueError as exc:
            return ui.bad_query(request, exc)
        if store.run_state(run_id) is None:
            return ui.missing(request, "run", run_id)
        return JSONResponse(store.items(run_id, params["task"], state=state, after=after, limit=limit))

    return [
        Route("/api/runs", api_runs),
        Route("/api/runs/{run_id}", api_run),
        Route("/api/runs/{run_id}/items", api_items),
    ]
