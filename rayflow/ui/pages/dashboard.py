"""The dashboard (``/``): runs over time as stacked bars by state (last 24 hours by the hour, 7 or 30
days by the day; a bar's part links to the runs it counts), the counts by state in the range, the
runs live now with their progress, the flows whose runs failed, the next scheduled fires and the
late ones.  Its aggregates are index searches (store.aggregates), whatever the history's size."""

from __future__ import annotations

import datetime as dt
import math
import time
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rayflow.presentation import SUCCEEDED, UNFINISHED
from rayflow.store import aggregates
from rayflow.store.schedules import ScheduleStore
from rayflow.ui import charts, queries
from rayflow.ui.context import UI
from rayflow.ui.queries import RANGES, QueryError

SCHEDULES_SHOWN = 10


def buckets(range_name: str, now: float) -> tuple[float, float, int]:
    """(start, bar width, bars) of a range: whole UTC hours or days, the last one holding ``now``."""
    width, n = RANGES[range_name]
    last = math.floor(now / width) * width
    return last - (n - 1) * width, float(width), n


def label(start: float, width: float) -> str:
    moment = dt.datetime.fromtimestamp(start, dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:00") if width < 86400 else moment.strftime("%a %Y-%m-%d")


def runs_link(state: str | None, start: float, end: float, flow: str | None = None) -> str:
    """The runs list of the runs in one bar (or one state of it): started in [start, end)."""
    pairs = {"flow": flow, "state": state, "from": queries.iso(start), "to": queries.iso(end)}
    return "/runs?" + urlencode({k: v for k, v in pairs.items() if v is not None})


def routes(ui: UI) -> list[Route]:
    store = ui.store

    async def dashboard(request: Request) -> Response:
        try:
            range_name = queries.range_query(request.query_params)
            part = queries.choice(request.query_params, "part", ("live",))
        except QueryError as exc:
            return ui.bad_query(request, exc)
        now = time.time()
        start, width, n = buckets(range_name, now)
        live, live_total = aggregates.live_runs(store)  # settles runs whose driver is gone first
        if part == "live":  # the live runs' refresh (htmx, every 2 s while some are)
            return ui.page(request, "dashboard_live.html", live=live, live_total=live_total, range=range_name)
        bars = aggregates.counts_by_bucket(store, start, width, n)
        labels = [label(start + i * width, width) for i in range(n)]
        totals: dict[str, int] = {}
        for bar in bars:
            for state, count in bar.items():
                totals[state] = totals.get(state, 0) + count
        chart = charts.stacked_bars(
            bars, labels, lambda i, state: runs_link(state, start + i * width, start + (i + 1) * width),
            every=1 if n <= 12 else (3 if n <= 24 else 5),
        )
        finished = sum(n for s, n in totals.items() if s not in UNFINISHED)
        rate = sum(n for s, n in totals.items() if s in SUCCEEDED) / finished if finished else None
        schedules = ScheduleStore(store)
        upcoming = sorted(
            (s for s in schedules.schedules() if s["next_fire"] is not None and s["next_fire"] >= now - 60),
            key=lambda s: s["next_fire"],
        )[:SCHEDULES_SHOWN]
        return ui.page(
            request, "dashboard.html", range=range_name, ranges=list(RANGES), chart=Markup(chart),
            totals=[(s, totals[s]) for s in charts.stack_order(set(totals))], total=sum(totals.values()),
            rate=rate, legend=charts.legend(charts.stack_order(set(totals))),
            all_runs=runs_link(None, start, start + n * width), state_link=lambda s, flow=None: runs_link(s, start, start + n * width, flow),
            start=start, live=live, live_total=live_total, failing=aggregates.failing_flows(store, start),
            upcoming=upcoming, late=schedules.late(now), now=now,
        )

    return [Route("/", dashboard)]
