"""Schedules: when a served flow runs (``rf.schedules``).

- ``Interval(every=timedelta(minutes=5), anchor=None, timezone="UTC")`` fires at
  ``anchor + k * every``; ``every`` is 1 second to 1e10 seconds, however it is given.  Under a day it steps in UTC (so a 90-minute interval
  is always 90 minutes apart, through daylight-saving changes); a day or more
  keeps the anchor's wall-clock time in ``timezone`` (a daily 06:00 stays at
  06:00 local on both sides of a change).  The default anchor is 2020-01-01
  00:00 in ``timezone``.
- ``Cron("0 6 * * 1-5", timezone="Europe/Paris")``: a cron expression (five
  fields, or six with seconds first; ``@hourly``, ``@daily``/``@midnight``,
  ``@weekly``, ``@monthly``, ``@yearly``/``@annually``), evaluated by cronsim
  with Debian cron's daylight-saving rules: a job at a fixed time that falls in
  the hour skipped in spring runs when the clock jumps (03:00), one in the hour
  repeated in autumn runs once, at its first occurrence.
- ``Union(a, b, ...)`` (or ``a | b``): every fire of each member, each with its
  own parameters.

Each schedule may carry ``parameters`` (merged over the served flow's) and two
policies the server follows: ``overlap`` (``skip``: no new run while the
schedule's previous run is going, the default; ``queue``: start it when the
previous one ends; ``allow``; ``cancel_running``: cancel the previous run,
then start) and ``catchup`` for missed fires: those whose time passed while
no server served the schedule, however late, those a dead server held, and
those a running server reached more than 60 s late (``skip``: none, the
default; ``latest``: the most recent one; ``all``: the most recent
``max_catchup``); each missed fire not run is recorded skipped.

Times are timezone-aware datetimes; everything is computed and stored in UTC.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from rayflow.exceptions import ScheduleError

UTC = dt.timezone.utc
OVERLAP = ("skip", "queue", "allow", "cancel_running")
CATCHUP = ("skip", "latest", "all")
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
DEFAULT_ANCHOR = dt.datetime(2020, 1, 1)
# An interval fires at most once a second (a server writes a row per fire and logs a line per run:
# 1 ms would be a thousand of each a second) and at least once in some 317 years.
MIN_EVERY, MAX_EVERY = 1.0, 1e10


def zone(name: str) -> ZoneInfo:
    """The IANA timezone ``name``, or a ScheduleError naming it."""
    if not isinstance(name, str) or not name:
        raise ScheduleError(f"timezone must be an IANA name such as 'Europe/Paris', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown timezone {name!r} (an IANA name such as 'Europe/Paris' or 'UTC')") from None


def as_utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        raise ScheduleError(f"{when.isoformat()} has no timezone; give an aware datetime")
    return when.astimezone(UTC)


MAX_CATCHUP = 10_000  # missed fires one catch-up may run at most (catchup="all")


class Schedule:
    """A rule for fire times; see the module's docstring."""

    def __init__(
        self,
        *,
        timezone: str = "UTC",
        parameters: Mapping[str, Any] | None = None,
        overlap: str = "skip",
        catchup: str = "skip",
        max_catchup: int = 100,
    ):
        self.tz = zone(timezone)
        self.timezone = timezone
        if parameters is not None and not isinstance(parameters, Mapping):
            raise ScheduleError(f"parameters must be a mapping of name to value, got {type(parameters).__name__}")
        self.parameters = dict(parameters or {})
        if overlap not in OVERLAP:
            raise ScheduleError(f"overlap must be one of {', '.join(OVERLAP)}; got {overlap!r}")
        if catchup not in CATCHUP:
            raise ScheduleError(f"catchup must be one of {', '.join(CATCHUP)}; got {catchup!r}")
        if not isinstance(max_catchup, int) or isinstance(max_catchup, bool) or not 1 <= max_catchup <= MAX_CATCHUP:
            raise ScheduleError(f"max_catchup must be a whole number from 1 to {MAX_CATCHUP}, got {max_catchup!r}")
        self.overlap, self.catchup, self.max_catchup = overlap, catchup, max_catchup

    # -- what every schedule answers --------------------------------------------------------

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        """The first fire strictly after ``after`` (UTC), or None if there is none."""
        raise NotImplementedError

    def members(self) -> list[Schedule]:
        """The schedules that fire on their own (a Union's members; else itself)."""
        return [self]

    def fires(self, after: dt.datetime, until: dt.datetime) -> Iterator[dt.datetime]:
        """Every fire in (after, until], in order (UTC)."""
        when = self.next_after(after)
        while when is not None and when <= until:
            yield when
            when = self.next_after(when)

    def upcoming(self, after: dt.datetime, n: int) -> list[dt.datetime]:
        """The next ``n`` fires after ``after`` (UTC), in order, members merged."""
        return list(itertools.islice(self.iter_upcoming(after), n))

    def iter_upcoming(self, after: dt.datetime) -> Iterator[dt.datetime]:
        """Every fire after ``after`` (UTC), in order, members merged, each computed when asked for."""
        when = after
        while True:
            nexts = [t for m in self.members() if (t := m.next_after(when)) is not None]
            if not nexts:
                return
            when = min(nexts)
            yield when

    def spec(self) -> dict[str, Any]:
        """A JSON description (stored with the schedule; its identity)."""
        raise NotImplementedError

    def _policies(self) -> dict[str, Any]:
        return {
            "timezone": self.timezone, "parameters": self.parameters, "overlap": self.overlap,
            "catchup": self.catchup, "max_catchup": self.max_catchup,
        }

    def rule(self) -> dict[str, Any]:
        """When it fires, and nothing else (no parameters, no policies)."""
        return {k: v for k, v in self.spec().items() if k not in ("parameters", "overlap", "catchup", "max_catchup")}

    def key(self, *also: Any) -> str:
        """A short stable digest of when it fires and of ``also`` (the served parameters, where the
        flow is): a schedule's identity, unchanged when only its policies change."""
        text = json.dumps([self.rule(), *also], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def __or__(self, other: Schedule) -> Union:
        return Union(self, other)

    def __repr__(self) -> str:
        return f"rf.schedules.{self.describe()}"

    def describe(self) -> str:
        raise NotImplementedError


class Interval(Schedule):
    def __init__(
        self,
        every: dt.timedelta | float | int,
        anchor: dt.datetime | None = None,
        **options: Any,
    ):
        super().__init__(**options)
        if isinstance(every, (int, float)) and not isinstance(every, bool):
            if not math.isfinite(every) or not MIN_EVERY <= every <= MAX_EVERY:
                raise ScheduleError(f"every must be a number of seconds from 1 to 1e10, got {every!r}")
            every = dt.timedelta(seconds=every)
        if not isinstance(every, dt.timedelta) or not MIN_EVERY <= every.total_seconds() <= MAX_EVERY:
            shown = f"{every.total_seconds():g}s" if isinstance(every, dt.timedelta) else repr(every)
            raise ScheduleError(f"every must be a timedelta or a number of seconds from 1 to 1e10, got {shown}")
        if isinstance(anchor, str):
            try:
                anchor = dt.datetime.fromisoformat(anchor)
            except ValueError:
                raise ScheduleError(f"anchor {anchor!r} is not an ISO date-time such as 2026-01-01T06:00") from None
        if anchor is not None and not isinstance(anchor, dt.datetime):
            raise ScheduleError(f"anchor must be a datetime (or an ISO date-time string), got {type(anchor).__name__}")
        self.every = every
        if anchor is None:
            anchor = DEFAULT_ANCHOR.replace(tzinfo=self.tz)
        elif anchor.tzinfo is None:
            anchor = anchor.replace(tzinfo=self.tz)  # a naive anchor is a wall-clock time in the timezone
        self.anchor = anchor
        self.wall_clock = every >= dt.timedelta(days=1)
        self._local_anchor = anchor.astimezone(self.tz).replace(tzinfo=None)

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        after = as_utc(after)
        if not self.wall_clock:  # fixed steps in UTC
            start = self.anchor.astimezone(UTC)
            k = math.floor((after - start) / self.every) + 1
            return start + k * self.every
        local = after.astimezone(self.tz).replace(tzinfo=None)
        k = max(math.floor((local - self._local_anchor) / self.every) - 1, -(10**9))
        while True:
            when = self._at(k)
            if when > after:
                return when
            k += 1

    def _at(self, k: int) -> dt.datetime:
        """The k-th fire: the anchor's wall-clock time k steps on, in the timezone."""
        return _wall(self._local_anchor + k * self.every, self.tz)

    def spec(self) -> dict[str, Any]:
        return {"kind": "interval", "every": self.every.total_seconds(), "anchor": self.anchor.isoformat(), **self._policies()}

    def describe(self) -> str:
        return f"Interval(every={self.every}, timezone={self.timezone!r})"


class Cron(Schedule):
    def __init__(self, expression: str, **options: Any):
        super().__init__(**options)
        if not isinstance(expression, str) or not expression.strip():
            raise ScheduleError(f"a cron expression must be a non-empty string, got {expression!r}")
        self.expression = expression.strip()
        self._expr = ALIASES.get(self.expression.lower(), self.expression)
        if self._expr.startswith("@"):
            raise ScheduleError(f"unknown cron alias {self.expression!r} (known: {', '.join(ALIASES)})")
        try:
            CronSim(self._expr, dt.datetime(2020, 1, 1, tzinfo=self.tz))
        except (CronSimError, ValueError, IndexError) as exc:
            raise ScheduleError(f"bad cron expression {self.expression!r}: {exc}") from None
        if len(self._expr.split()) == 6 and self.timezone != "UTC" and str(self.tz.key) not in ("UTC", "Etc/UTC"):
            raise ScheduleError(
                f"cron expression {self.expression!r} has a seconds field, which follows no daylight-saving "
                "rules: use five fields, or timezone='UTC'"
            )

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        after = as_utc(after)
        times = CronSim(self._expr, after.astimezone(self.tz))
        try:
            for _ in range(10_000):
                # cronsim reads a local time without its fold: in an hour the clock repeats it may
                # answer a time already past (its first occurrence, which fired then): skip those
                when = next(times).astimezone(UTC)
                if when > after:
                    return when
        except StopIteration:  # no match within 50 years (e.g. 30 February)
            return None
        return None

    def spec(self) -> dict[str, Any]:
        return {"kind": "cron", "expression": self.expression, **self._policies()}

    def describe(self) -> str:
        return f"Cron({self.expression!r}, timezone={self.timezone!r})"


class Union(Schedule):
    def __init__(self, *schedules: Schedule):
        flat: list[Schedule] = []
        for s in schedules:
            if not isinstance(s, Schedule):
                raise ScheduleError(f"Union takes schedules, got {type(s).__name__}")
            flat.extend(s.members())
        if not flat:
            raise ScheduleError("Union needs at least one schedule")
        super().__init__(timezone=flat[0].timezone)
        self._members = flat

    def members(self) -> list[Schedule]:
        return list(self._members)

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        nexts = [t for m in self._members if (t := m.next_after(after)) is not None]
        return min(nexts) if nexts else None

    def spec(self) -> dict[str, Any]:
        return {"kind": "union", "members": [m.spec() for m in self._members]}

    def rule(self) -> dict[str, Any]:
        return {"kind": "union", "members": [m.rule() for m in self._members]}

    def describe(self) -> str:
        return " | ".join(m.describe() for m in self._members)


def _wall(local: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """A naive wall-clock time in ``tz`` as UTC, as cron does it: a repeated time is its first
    occurrence; a time the clock skipped becomes the first minute after the jump (02:30 on a
    spring-forward night is 03:00)."""
    while _imaginary(local, tz):
        local = local.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _imaginary(local: dt.datetime, tz: ZoneInfo) -> bool:
    aware = local.replace(tzinfo=tz, fold=0)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != local


def from_spec(spec: Mapping[str, Any]) -> Schedule:
    """A schedule from its stored ``spec()``."""
    kind = spec.get("kind")
    options = {k: spec[k] for k in ("timezone", "parameters", "overlap", "catchup", "max_catchup") if k in spec}
    if kind == "interval":
        return Interval(dt.timedelta(seconds=spec["every"]), dt.datetime.fromisoformat(spec["anchor"]), **options)
    if kind == "cron":
        return Cron(spec["expression"], **options)
    if kind == "union":
        return Union(*(from_spec(m) for m in spec["members"]))
    raise ScheduleError(f"unknown schedule kind {kind!r}")
