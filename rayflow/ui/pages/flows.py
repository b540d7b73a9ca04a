"""The flows page (``/flows``): each flow's recent runs and schedules; under ``serve --ui``, run now."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from rayflow.exceptions import RayflowError
from rayflow.store.aggregates import flows_latest
from rayflow.store.schedules import ScheduleStore
from rayflow.ui.context import UI


def routes(ui: UI) -> list[Route]:
    store, actions = ui.store, ui.actions

    async def flows_page(request: Request) -> Response:
        flows = flows_latest(store)  # each flow's last 30 runs along runs_by_flow, not the latest runs of all
        schedules = ScheduleStore(store).schedules()
        served = {name: actions.parameters(name) for name in actions.names()} if actions is not None else {}
        return ui.page(request, "flows.html", flows=flows, schedules=schedules, served=served)

    async def run_now(request: Request) -> Response:
        if (no := await ui.refused_action(request)) is not None:
            return no
        name = request.path_params["flow"]
        form = await request.form()
        texts = {k: str(v) for k, v in form.items() if v != "" and k != "csrf_token"}
        try:
            run_id = await run_in_threadpool(lambda: actions.run_now(name, text=texts))
        except (KeyError, RayflowError) as exc:
            return ui.page(request, "error.html", 400, message=str(exc).strip("'\""))
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    return [Route("/flows", flows_page), Route("/flows/{flow}/run", run_now, methods=["POST"])]
