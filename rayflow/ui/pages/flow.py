"""A flow's page (``/flows/{name}``): its success rate, the duration trend of its recent runs (median
and p95 per day), the grid of its last runs × its tasks coloured by state (Airflow's grid view: a
task that started failing stands out as a row turning red), its schedules and next fires, and,
under ``rayflow serve --ui``, the run-now form built from its parameter model."""

from __future__ import annotations

import datetime as dt
import math
import statistics
import time
from urllib.parse import quote

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rayflow.presentation import SUCCEEDED, UNFINISHED
from rayflow.store import aggregates
from rayflow.store.schedules import ScheduleStore
from rayflow.ui import charts
from rayflow.ui.context import UI

GRID_RUNS = 30  # the grid's columns: the flow's last runs
TREND_DAYS = 30  # the success rate's and the duration trend's window, in whole UTC days
DAY = 86400


def task_link(run: dict, key: str) -> str:
    """Where a grid cell leads: the task's page in that run."""
    return f"/runs/{quote(run['run_id'], safe='')}/tasks/{quote(key, safe='/')}"


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank) of ``values`` (not empty)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


def trend(outcomes: list[tuple[str, float, float | None]], start: float, days: int) -> list[tuple[str, dict]]:
    """Per UTC day from ``start``: the median and p95 duration of the runs that finished (None: no run)."""
    by_day: list[list[float]] = [[] for _ in range(days)]
    for state, started, finished in outcomes:
        if finished is not None and state not in UNFINISHED and 0 <= (d := int((started - start) // DAY)) < days:
            by_day[d].append(finished - started)
    out = []
    for d, spans in enumerate(by_day):
        day = dt.datetime.fromtimestamp(start + d * DAY, dt.timezone.utc).strftime("%Y-%m-%d")
        out.append((day, {"median": statistics.median(spans), "p95": p95(spans)} if spans else {}))
    return out


def grid_keys(runs: list[dict]) -> list[str]:
    """The grid's rows: the newest run's task keys in its order, then keys only older runs had."""
    keys: list[str] = []
    seen: set[str] = set()
    for run in reversed(runs):
        for row in run["task_rows"]:
            if row["task"] not in seen:
                seen.add(row["task"])
                keys.append(row["task"])
    return keys


def routes(ui: UI) -> list[Route]:
    store, actions = ui.store, ui.actions

    async def flow_page(request: Request) -> Response:
        name = request.path_params["flow"]
        served = actions.parameters(name) if actions is not None and name in actions.names() else None
        schedules = [s for s in ScheduleStore(store).schedules() if s["flow"] == name]
        if not aggregates.flow_exists(store, name) and served is None and not schedules:
            return ui.missing(request, "flow", name)
        now = time.time()
        start = (math.floor(now / DAY) - TREND_DAYS + 1) * DAY
        outcomes = aggregates.flow_outcomes(store, name, start)
        finished = [o for o in outcomes if o[0] not in UNFINISHED]
        succeeded = sum(1 for o in finished if o[0] in SUCCEEDED)
        spans = [o[2] - o[1] for o in finished if o[2] is not None]
        runs = aggregates.flow_runs(store, name, GRID_RUNS)
        for run in runs:
            run["by_task"] = {row["task"]: row for row in run["task_rows"]}
        keys = grid_keys(runs)
        points = trend(outcomes, start, TREND_DAYS)
        return ui.page(
            request, "flow.html", name=name, runs=runs, keys=keys,
            grid=Markup(charts.grid(runs, keys, task_link)) if runs else "",
            grid_legend=charts.legend(charts.stack_order({r["state"] for r in runs} | {t["state"] for r in runs for t in r["task_rows"]})),
            durations=Markup(charts.lines(points, ("median", "p95"))),
            finished=len(finished), succeeded=succeeded, failed=len(finished) - succeeded, started=len(outcomes),
            rate=succeeded / len(finished) if finished else None, days=TREND_DAYS,
            median=statistics.median(spans) if spans else None, p95=p95(spans) if spans else None,
            schedules=sorted(schedules, key=lambda s: s["next_fire"] or math.inf), served=served,
        )

    return [Route("/flows/{flow:path}", flow_page)]  # any name: one with a slash gets the 404 page too
