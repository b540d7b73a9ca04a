"""A map of a run (``/runs/{run_id}/maps/{key}``) and one of its items (``.../items/{index}``).

The map's page: its item counts by state (the sum of its chunk rows' counts, as the engine
decided them: ``views.item_states``), its throughput over time (from the chunk rows), and the
items that failed, were skipped or were run again (the engine's item rows), filtered by state
and by error type (a select of the map's error types with their counts: one grouped count over
an index) and paged by index (``?after=INDEX``, 50 a page: one range of an index per page,
whatever the map's size).  An item's page: its row (state, attempts, error, full traceback)
and its log records.  Both read the facts the engine recorded, never a replay of the map.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from markupsafe import Markup
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rayflow.presentation import STATE_NAMES, UNFINISHED
from rayflow.store.views import map_items
from rayflow.ui.context import UI
from rayflow.ui.map_svg import chunk_stats, throughput_svg
from rayflow.ui.queries import QueryError, one

ITEMS_PAGE = 50
MAX_INDEX = 2**62  # far past any map, inside SQLite's integers


def is_map(run: dict, key: str) -> bool:
    """Whether ``key`` is a map of ``run``: so in its recorded graph, or it has chunk rows."""
    nodes = (run.get("graph") or {}).get("nodes") or []
    return any(n.get("key") == key and n.get("kind") == "map" for n in nodes) or bool(run["chunks"])


def index_value(text: str, name: str) -> int:
    """A map index written in a query or a path: a whole number from 0."""
    if not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_INDEX)) or int(text) > MAX_INDEX:
        raise QueryError(f"{name} must be a whole number from 0 to {MAX_INDEX} (a map index); got {text[:40]!r}")
    return int(text)


def item_query(params: QueryParams, errors: dict[str, int]) -> tuple[str | None, str | None, int]:
    """The map page's filters, checked: (state, error type, after); a bad one is a QueryError."""
    state = one(params, "state")
    if state is not None:
        if state.upper() not in STATE_NAMES:
            raise QueryError(f"state must be one of {', '.join(STATE_NAMES)}; got {state!r}")
        state = state.upper()
    error = one(params, "error")
    if error is not None and error not in errors:
        known = ", ".join(errors) or "none: no item of it failed with an error"
        raise QueryError(f"error must be one of this map's error types ({known}); got {error!r}")
    after = one(params, "after")
    return state, error, index_value(after, "after") if after is not None else -1


def routes(ui: UI) -> list[Route]:
    store = ui.store

    def the_map(request: Request) -> tuple[dict | None, Response | None]:
        run_id, key = request.path_params["run_id"], request.path_params["key"]
        run = store.task_record(run_id, key)
        if run is None:
            return None, ui.missing(request, "run", run_id)
        if not is_map(run, key):
            return None, ui.missing(request, "map", key)
        return run, None

    async def map_page(request: Request) -> Response:
        run, refused = the_map(request)
        if run is None:
            return refused
        key = request.path_params["key"]
        facets = store.item_facets(run["run_id"], key, run["attempt"])
        errors: dict[str, int] = {}
        row_states: dict[str, int] = {}
        for f in facets:
            row_states[f["state"]] = row_states.get(f["state"], 0) + f["n"]
            if f["error_type"] is not None:
                errors[f["error_type"]] = errors.get(f["error_type"], 0) + f["n"]
        try:
            state, error, after = item_query(request.query_params, errors)
        except QueryError as exc:
            return ui.bad_query(request, exc)
        rows = store.item_page(run["run_id"], key, run["attempt"], state=state, error_type=error, after=after, limit=ITEMS_PAGE + 1)
        filters = {"state": state or "", "error": error or ""}
        more = len(rows) > ITEMS_PAGE
        rows = rows[:ITEMS_PAGE]
        base = f"/runs/{quote(run['run_id'], safe='')}/maps/{quote(key, safe='/')}"  # a key's '?' or '#' stays in the path
        matching = sum(f["n"] for f in facets if (state is None or f["state"] == state) and (error is None or f["error_type"] == error))
        return ui.page(
            request, "map.html", run=run, key=key, counts=map_items(run["chunks"]), rows=rows, errors=errors,
            row_states=row_states, state=state, error=error, after=after, matching=matching, page_size=ITEMS_PAGE,
            next_url=f"{base}?{urlencode({**filters, 'after': rows[-1]['item']})}" if more else None,
            first_url=f"{base}?{urlencode(filters)}" if after >= 0 else None,
            chart=Markup(throughput_svg(run["chunks"])), stats=chunk_stats(run["chunks"]), live=run["state"] in UNFINISHED,
            states=sorted(STATE_NAMES),
        )

    async def item_page(request: Request) -> Response:
        run, refused = the_map(request)
        if run is None:
            return refused
        key, text = request.path_params["key"], request.path_params["index"]
        try:
            index = index_value(text, "the item")
        except QueryError:
            return ui.missing(request, f"item of map {key}", text)
        row = store.item(run["run_id"], key, run["attempt"], index)
        counts = map_items(run["chunks"])
        if row is None and not index < counts["total"]:
            return ui.missing(request, f"item of map {key}", text)
        logs = store.logs(run["run_id"], task=key, item=index)  # what `rayflow logs RUN --task MAP --item N` reads
        return ui.page(
            request, "map_item.html", run=run, key=key, index=index, row=row, logs=logs, live=run["state"] in UNFINISHED,
            total=counts["total"],
        )

    return [
        Route("/runs/{run_id}/maps/{key:path}/items/{index}", item_page),
        Route("/runs/{run_id}/maps/{key:path}", map_page),
    ]
