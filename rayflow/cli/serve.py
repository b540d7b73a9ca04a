"""``rayflow serve``, ``rayflow schedule preview`` and ``rayflow schedules``."""

from __future__ import annotations

import datetime as dt
import itertools
import sys
from collections.abc import Iterator
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from rayflow.cli.loader import TargetError, load_flow
from rayflow.core.parameters import parameter_values
from rayflow.schedules import Cron, Interval, Schedule, from_spec

UTC = dt.timezone.utc
ENTRY_KEYS = {"target", "cron", "interval", "timezone", "parameters", "overlap", "catchup", "max_catchup", "anchor", "notify"}
NOTIFY_KEYS = {  # a flows.toml entry's notify = [{kind = ..., ...}]: what each kind takes (rf.notify's arguments)
    "webhook": {"url", "headers", "states", "timeout", "retries"},
    "slack": {"url", "states", "timeout", "retries"},
    "email": {"to", "smtp_host", "smtp_port", "sender", "username", "password_env", "starttls", "ssl", "states",
              "timeout", "retries"},
}
SERVER_KEYS = {"max_concurrent", "grace", "address"}
MAX_PREVIEW = 10_000  # `rayflow schedule preview -n`: more is refused


def schedule_from(
    cron: str | None, interval: float | None, timezone: str | None, **policies: Any
) -> Schedule:
    """The schedule a command line or a config entry asks for: exactly one of cron or interval."""
    from rayflow.exceptions import ScheduleError

    if (cron is None) == (interval is None):
        raise ScheduleError("give exactly one of --cron EXPR or --interval SECONDS")
    if policies.get("max_catchup") is not None and policies.get("catchup") != "all":
        raise ScheduleError(
            f"max_catchup applies to catchup 'all' only (catchup is {policies.get('catchup') or 'skip'!r}): "
            "skip runs no missed fire, latest one"
        )
    options = {"timezone": timezone or "UTC", **{k: v for k, v in policies.items() if v is not None}}
    if cron is not None:
        return Cron(cron, **options)
    return Interval(interval, **options)


def config_entries(path: str) -> tuple[list[tuple[Any, Schedule, dict, str]], dict[str, Any]]:
    """(flow, schedule, parameters, target) per ``[[flow]]`` of a TOML file, and its ``[server]``."""
    from rayflow.exceptions import ScheduleError

    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
    except OSError as exc:
        raise TargetError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(config) - {"flow", "server"}
    if unknown:
        raise ScheduleError(f"{path}: unknown table(s) {sorted(unknown)} (expected [[flow]] and [server])")
    server = config.get("server", {})
    if not isinstance(server, dict) or set(server) - SERVER_KEYS:
        raise ScheduleError(f"{path}: [server] takes only {sorted(SERVER_KEYS)}")
    check_server_options(server, f"{path}: [server] ")
    flows = config.get("flow")
    if not isinstance(flows, list) or not flows:
        raise ScheduleError(f"{path}: no [[flow]] entries to serve")
    out = []
    for i, entry in enumerate(flows, 1):
        where = f"{path}: [[flow]] entry {i}"
        if not isinstance(entry, dict):
            raise ScheduleError(f"{where} is not a table")
        extra = set(entry) - ENTRY_KEYS
        if extra:
            raise ScheduleError(f"{where}: unknown key(s) {sorted(extra)}")
        if not entry.get("target"):
            raise ScheduleError(f"{where} has a schedule but no flow: give target = \"file.py:flow\"")
        if not isinstance(entry["target"], str):
            raise ScheduleError(f"{where}: target must be a string such as \"file.py:flow\"")
        if entry.get("anchor") is not None and entry.get("interval") is None:
            raise ScheduleError(f"{where}: anchor applies to an interval only")
        try:
            flow = load_flow(entry["target"])
            parameters = entry.get("parameters")
            if isinstance(parameters, dict):  # TOML values are typed: taken as they are, as --params-json's
                parameters = parameter_values(flow.parameters_model, typed=parameters)
            anchor = entry.get("anchor")
            schedule = schedule_from(
                entry.get("cron"), entry.get("interval"), entry.get("timezone"),
                overlap=entry.get("overlap"), catchup=entry.get("catchup"), max_catchup=entry.get("max_catchup"),
                parameters=parameters,
                **({"anchor": anchor} if anchor is not None and entry.get("interval") is not None else {}),
            )
            if "notify" in entry:
                flow = with_notifiers(flow, notifiers(entry["notify"]))
        except (TargetError, ScheduleError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
        out.append((flow, schedule, {}, entry["target"]))
    return out, server


def notifiers(entries: Any) -> tuple[Any, ...]:
    """The notifiers a flows.toml entry's ``notify`` list names; a bad one is a ScheduleError naming it."""
    import os

    import rayflow.notify as notify
    from rayflow.exceptions import DefinitionError, ScheduleError

    if not isinstance(entries, list):
        raise ScheduleError('notify must be a list of tables such as [{kind = "webhook", url = "https://..."}]')
    out = []
    for j, item in enumerate(entries, 1):
        kind = item.get("kind") if isinstance(item, dict) else None
        if kind not in NOTIFY_KEYS:
            raise ScheduleError(f"notify entry {j}: kind must be one of {sorted(NOTIFY_KEYS)}, got {kind!r}")
        args = {k: v for k, v in item.items() if k != "kind"}
        extra = set(args) - NOTIFY_KEYS[kind]
        if extra:
            raise ScheduleError(f"notify entry {j} ({kind}): unknown key(s) {sorted(extra)}; it takes {sorted(NOTIFY_KEYS[kind])}")
        try:
            if kind == "email":
                if "password_env" in args:
                    args["password"] = os.environ.get(args.pop("password_env"))
                out.append(notify.email(args.pop("to", None), **args))
            else:
                if "url" not in args:
                    raise ScheduleError(f"notify entry {j} ({kind}): give url = \"https://...\"")
                out.append(getattr(notify, kind)(args.pop("url"), **args))
        except (DefinitionError, TypeError) as exc:
            raise ScheduleError(f"notify entry {j}: {exc}") from None
    return tuple(out)


def with_notifiers(flow: Any, extra: tuple[Any, ...]) -> Any:
    """``flow`` whose failures, and SLA misses if it has an SLA, are also told to ``extra``."""
    if not extra:
        return flow
    sla = flow.options.sla
    changes: dict[str, Any] = {"on_failure": (*flow.options.on_failure, *extra)}
    if sla is not None:
        changes["sla"] = sla.model_copy(update={"notify": (*sla.notify, *extra)})
    return flow.with_options(**changes)


def check_server_options(options: dict[str, Any], where: str = "") -> None:
    """max_concurrent a positive int, grace a number of seconds >= 0, address a string."""
    from rayflow.exceptions import ScheduleError

    concurrent = options.get("max_concurrent")
    if concurrent is not None and (not isinstance(concurrent, int) or isinstance(concurrent, bool) or concurrent < 1):
        raise ScheduleError(f"{where}max_concurrent must be a positive int, got {concurrent!r}")
    grace = options.get("grace")
    if grace is not None and (not isinstance(grace, (int, float)) or isinstance(grace, bool) or not 0 <= grace < float("inf")):
        raise ScheduleError(f"{where}grace must be a number of seconds >= 0, got {grace!r}")
    address = options.get("address")
    if address is not None and not isinstance(address, str):
        raise ScheduleError(f"{where}address must be a string, got {address!r}")


def preview_lines(schedule: Schedule, n: int, after: dt.datetime | None = None) -> Iterator[str]:
    """The next ``n`` fires as lines, each computed when it is printed (nothing waits for the last)."""
    after = after or dt.datetime.now(UTC)
    tz = schedule.members()[0].tz
    for when in itertools.islice(schedule.iter_upcoming(after), n):
        local = when.astimezone(tz)
        yield f"{local.isoformat(timespec='seconds')}\t{when.isoformat(timespec='seconds').replace('+00:00', 'Z')}"


def check_preview_count(n: int) -> None:
    from rayflow.exceptions import ScheduleError

    if n > MAX_PREVIEW:
        raise ScheduleError(f"-n must be at most {MAX_PREVIEW} fire times, got {n}")


def schedule_rows(schedules: list[dict], now: dt.datetime | None = None) -> list[list[str]]:
    now = now or dt.datetime.now(UTC)
    rows = []
    for s in schedules:
        try:
            schedule = from_spec(s["spec"])
            upcoming = schedule.next_after(now)
            described = schedule.describe()
        except Exception as exc:  # noqa: BLE001 - a spec an older rayflow wrote: shown, not fatal
            upcoming, described = None, f"(unreadable: {exc})"
        last = s.get("last") or {}
        state = last.get("state") or last.get("outcome") or "-"
        misses = s.get("sla_misses") or {}
        rows.append([
            s["schedule_id"], s["flow"], described,
            upcoming.isoformat(timespec="seconds").replace("+00:00", "Z") if upcoming else "-",
            state, ", ".join(f"{n} {kind}" for kind, n in sorted(misses.items())) or "-", s.get("target") or "-",
        ])
    return rows


__all__ = ["MAX_PREVIEW", "check_preview_count", "config_entries", "preview_lines", "schedule_from", "schedule_rows"]
