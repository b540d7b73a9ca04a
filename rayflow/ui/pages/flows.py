"""The flows page (``/flows``): each flow's recent runs and schedules; under ``serve --ui``, run now."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from rayflow.exceptions import RayflowError
from rayflow.store.schedules import ScheduleStore
from rayflow.ui.context import UI


def routes(ui: UI) -> list[Route]:
    store, actions = ui.store, ui.actions

    async def flows_page(request: Request) -> Response:
        recent = store.runs(limit=1000)
        by_flow: dict[str, list[dict]] = {}
        for r in recent:
            by_flow.setdefault(r["flow"], []).append(r)
        schedules = ScheduleStore(store).schedules()
        served = {name: actions.parameters(name) for name in actions.names()} if actions is not None else {}
        return ui.page(request, "flows.html", flows=sorted(by_flow.items()), schedules=schedules, served=served)

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
