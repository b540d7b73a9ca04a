"""The query values the UI's pages and its JSON take, checked: a bad one is a QueryError whose
message says which and why (the app answers 400 with it), never a value silently replaced."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection
from dataclasses import dataclass

from starlette.datastructures import QueryParams

from rayflow.presentation import RUN_STATES

PAGE_SIZE = 50
MAX_PAGE = 1_000_000_000  # 5e10 rows in: far past any history, and well inside SQLite's integers
STATES = RUN_STATES  # the run states the filter offers
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SINCE = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}  # the time filter's choices
MAX_TEXT = 500
# The dashboard's ranges: (bar width in seconds, bars); their bars start on whole UTC hours or days.
RANGES = {"24h": (3600, 24), "7d": (86400, 7), "30d": (86400, 30)}
_UNIX = re.compile(r"\d{1,11}(\.\d{1,6})?")


class QueryError(ValueError):
    """A query value the UI does not take: its message is the 400's reason."""


@dataclass(frozen=True)
class RunsQuery:
    flow: str | None = None
    state: str | None = None
    since: str | None = None
    page: int = 1
    start: float | None = None  # ?from=: started at or after
    end: float | None = None  # ?to=: started before

    @property
    def offset(self) -> int:
        return (self.page - 1) * PAGE_SIZE


@dataclass(frozen=True)
class LogsQuery:
    task: str | None = None
    level: str | None = None
    text: str | None = None  # the message contains it (case-insensitive)
    after: int = 0  # a log row number: the live tail's lines after it

    @property
    def below(self) -> tuple[str, ...]:
        """The levels under ``level`` (left out; a level outside LEVELS is kept)."""
        return LEVELS[: LEVELS.index(self.level)] if self.level else ()


def one(params: QueryParams, name: str) -> str | None:
    """The value of ``name`` ("" counts as absent: the filter forms send empty selects)."""
    values = params.getlist(name)
    if len(values) > 1:
        raise QueryError(f"{name} is given {len(values)} times: give it once")
    if not values or values[0] == "":
        return None
    if len(values[0]) > MAX_TEXT:
        raise QueryError(f"{name} is longer than {MAX_TEXT} characters")
    return values[0]


def choice(params: QueryParams, name: str, choices: Collection[str]) -> str | None:
    """The value of ``name``, one of ``choices`` (or absent); QueryError for any other."""
    value = one(params, name)
    if value is None:
        return None
    if value.upper() in choices:
        return value.upper()
    if value in choices:
        return value
    raise QueryError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def whole(params: QueryParams, name: str, low: int, high: int, default: int | None) -> int | None:
    """A whole-number query value from ``low`` to ``high`` (``default`` when absent), or a QueryError saying why not."""
    text = one(params, name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > len(str(high)) or not low <= int(text) <= high:
        raise QueryError(f"{name} must be a whole number from {low} to {high}; got {text[:40]!r}")
    return int(text)


def runs_query(params: QueryParams) -> RunsQuery:
    """The runs page's and ``/api/runs``' filters: flow, state, since, page."""
    page = whole(params, "page", 1, MAX_PAGE, 1)
    since = one(params, "since")
    if since is not None and since not in SINCE:
        raise QueryError(f"since must be one of {', '.join(SINCE)}; got {since!r}")
    start, end = moment(params, "from"), moment(params, "to")
    if start is not None and end is not None and start >= end:
        raise QueryError(f"from must be before to; got from={one(params, 'from')!r}, to={one(params, 'to')!r}")
    return RunsQuery(
        flow=one(params, "flow"), state=choice(params, "state", STATES), since=since, page=page, start=start, end=end,
    )


def moment(params: QueryParams, name: str) -> float | None:
    """A time given as ``name``: unix seconds, or ISO 8601 (``2026-12-06T20:00:00Z``; without a
    zone, UTC); QueryError for anything else."""
    text = one(params, name)
    if text is None:
        return None
    if _UNIX.fullmatch(text):
        return float(text)
    try:
        found = dt.datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(
            f"{name} must be a time, unix seconds or ISO 8601 like 2026-12-06T20:00:00Z; got {text[:40]!r}"
        ) from None
    return (found if found.tzinfo is not None else found.replace(tzinfo=dt.timezone.utc)).timestamp()


def iso(ts: float) -> str:
    """``ts`` as ``moment`` reads it back: ISO 8601 in UTC, to the second."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def range_query(params: QueryParams) -> str:
    """The dashboard's range: one of RANGES (default 24h)."""
    value = one(params, "range") or "24h"
    if value not in RANGES:
        raise QueryError(f"range must be one of {', '.join(RANGES)}; got {value!r}")
    return value


def logs_query(params: QueryParams, tasks: Collection[str]) -> LogsQuery:
    """A run page's log filters: one of the run's tasks, a level and above, a text the
    message contains (``q``), and for the live tail the last row seen (``after``)."""
    task = one(params, "task")
    if task is not None and task not in tasks:
        raise QueryError(f"task must be one of this run's tasks; it has no task {task!r}")
    return LogsQuery(
        task=task, level=choice(params, "level", LEVELS), text=one(params, "q"), after=whole(params, "after", 0, 2**62, 0),
    )
