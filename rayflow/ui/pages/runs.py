"""The runs list (``/runs``): filters by flow, state and start (``since``, or a window ``from``..``to``,
which the dashboard's bars link to), one page at a time, live while runs are."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rayflow.presentation import UNFINISHED
from rayflow.store.history import RunStore
from rayflow.store.views import trace_url
from rayflow.ui import queries
from rayflow.ui.context import UI
from rayflow.ui.queries import PAGE_SIZE, SINCE, STATES, QueryError


def routes(ui: UI) -> list[Route]:
    async def runs_page(request: Request) -> Response:
        try:
            query = queries.runs_query(request.query_params)
        except QueryError as exc:
            return ui.bad_query(request, exc)
        runs, more = page_of_runs(ui.store, query)
        for r in runs:
            r["trace_url"] = trace_url(r["trace_id"])
        context = {
            "runs": runs, "flow": query.flow, "state": query.state, "page": query.page, "more": more, "states": STATES,
            "since": query.since, "sinces": list(SINCE),
            "start": queries.iso(query.start) if query.start is not None else None,
            "end": queries.iso(query.end) if query.end is not None else None,
            "kept": kept(query),
            "flows": ui.store.flows(), "live": any(r["state"] in UNFINISHED for r in runs),
        }
        if request.headers.get("HX-Request"):  # a live refresh: the table only
            return ui.page(request, "runs_table.html", **context)
        return ui.page(request, "runs.html", **context)

    return [Route("/runs", runs_page)]


def kept(query: queries.RunsQuery) -> str:
    """The query's filters as a query string (without its page): for the pager and the live refresh."""
    pairs = {
        "flow": query.flow, "state": query.state, "since": query.since,
        "from": queries.iso(query.start) if query.start is not None else None,
        "to": queries.iso(query.end) if query.end is not None else None,
    }
    return urlencode({k: v for k, v in pairs.items() if v is not None})


def page_of_runs(store: RunStore, query: queries.RunsQuery) -> tuple[list[dict], bool]:
    """One page of runs, newest first, and whether there are more: reads that page's rows only."""
    after = time.time() - SINCE[query.since] if query.since else None
    if query.start is not None:
        after = query.start if after is None else max(after, query.start)
    runs = store.runs(
        flow=query.flow, state=query.state, limit=PAGE_SIZE + 1, offset=query.offset, since=after, before=query.end,
    )
    return runs[:PAGE_SIZE], len(runs) > PAGE_SIZE
