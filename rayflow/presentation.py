"""How states, durations and times are shown: one table for the CLI, the web UI, graphs and logs.

Every ``StateType`` has a ``Look``: its *category* (``ok``, ``failed``, ``live`` or ``muted``;
the UI's CSS class), its fill colour (graph nodes, timeline bars, mermaid and dot), its
terminal style (rich markup in the CLI's tables), a one-character symbol, and its place in a
sort.  The category is how a state *looks*, not what it means: CANCELLED is one of
``FAILED_TYPES`` (a cancelled run exits 1 and counts as failed) but is shown muted, as
SKIPPED is; CRASHED is shown failed.  The groups of what states *mean* are here too, built
from ``rayflow.states`` once (``FAILED``, ``SUCCEEDED``, ``UNFINISHED``), so no reader
writes them out by hand.

Durations and times: ``duration`` (seconds or None), ``took`` (``1.234s`` or ``-``), ``when``
(local ``YYYY-MM-DD HH:MM:SS``) and ``clock`` (local ``HH:MM:SS.mmm``, for log lines).

This module imports nothing but ``rayflow.states`` (and the standard library), so that the
CLI's startup stays light and every layer above the states may use it.
"""

from __future__ import annotations

import datetime as _dt
from typing import NamedTuple

from rayflow.state_types import FAILED_TYPES, SUCCESSFUL_TYPES, StateType


class Look(NamedTuple):
    category: str  # ok, failed, live, muted: the UI's CSS class
    colour: str  # fill colour of a graph node or a timeline bar
    style: str  # rich style of the state's cell in a terminal table
    symbol: str  # one character, for a compact listing
    order: int  # sort position: live first, then failed, muted, ok


OK, FAILED_CATEGORY, LIVE, MUTED = "ok", "failed", "live", "muted"
CATEGORIES = (OK, FAILED_CATEGORY, LIVE, MUTED)

LOOKS: dict[StateType, Look] = {
    StateType.RUNNING: Look(LIVE, "#aecbfa", "yellow", "▶", 0),
    StateType.RETRYING: Look(LIVE, "#fdd663", "yellow", "↻", 2),
    StateType.PAUSED: Look(LIVE, "#d7aefb", "magenta", "⏸", 3),
    StateType.LOOPED: Look(LIVE, "#aecbfa", "yellow", "⟳", 1),
    StateType.PENDING: Look(LIVE, "#ffffff", "yellow", "…", 4),
    StateType.SCHEDULED: Look(LIVE, "#ffffff", "yellow", "◷", 5),
    StateType.CRASHED: Look(FAILED_CATEGORY, "#e57373", "bold red", "☠", 6),
    StateType.FAILED: Look(FAILED_CATEGORY, "#f28b82", "red", "✗", 7),
    StateType.TIMED_OUT: Look(FAILED_CATEGORY, "#f28b82", "red", "⌛", 8),
    StateType.TRIGGER_FAILED: Look(FAILED_CATEGORY, "#fbbc04", "red", "⊘", 9),
    StateType.CANCELLED: Look(MUTED, "#bdbdbd", "bright_black", "■", 10),
    StateType.SKIPPED: Look(MUTED, "#cfd8dc", "cyan", "↷", 11),
    StateType.SUCCESS: Look(OK, "#9be39b", "green", "✓", 12),
    StateType.MAPPED: Look(OK, "#9be39b", "green", "✓", 13),
    StateType.CACHED: Look(OK, "#9be39b", "cyan", "✓", 14),
}
UNKNOWN = Look(MUTED, "#ffffff", "", "?", 99)  # a state an older or newer rayflow wrote

# What states mean, as the strings the history, the live status and the tables hold.
STATE_NAMES = tuple(t.value for t in StateType)  # what a run's or a task's state may read
FAILED = frozenset(t.value for t in FAILED_TYPES)
SUCCEEDED = frozenset(t.value for t in SUCCESSFUL_TYPES)
UNFINISHED = (StateType.PENDING.value, StateType.RUNNING.value)  # a run's recorded states before it ends
ACTIVE = frozenset({"PENDING", "SCHEDULED", "RUNNING", "RETRYING", "PAUSED", "LOOPED"})  # a task not ended yet
# The states a flow run's record may hold (engine.policy.final_flow_state: SUCCESS, FAILED,
# CANCELLED; PENDING and RUNNING before it ends; CRASHED once its driver or actor is gone), in
# the order the UI's state filter offers them.
RUN_STATES = ("SUCCESS", "FAILED", "CRASHED", "CANCELLED", "RUNNING", "PENDING")


def look(state: str | StateType | None) -> Look:
    """The look of ``state`` (a ``StateType`` or its name); ``UNKNOWN`` for any other text."""
    try:
        return LOOKS[StateType(state)]
    except ValueError:
        return UNKNOWN


def category(state: str | StateType | None) -> str:
    return look(state).category


def colour(state: str | StateType | None, default: str | None = None) -> str:
    """The fill colour of ``state``; ``default`` (when given) for a state that is not known."""
    found = look(state)
    return default if found is UNKNOWN and default is not None else found.colour


def styled(state: str) -> str:
    """``state`` in rich markup, in its terminal style."""
    style = look(state).style
    return f"[{style}]{state}[/]" if style else state


def sort_key(state: str | StateType | None) -> int:
    return look(state).order


# -- durations and times ------------------------------------------------------------------


def duration(started_at: float | None, finished_at: float | None) -> float | None:
    """A span in seconds, None when either end is not known."""
    return None if started_at is None or finished_at is None else finished_at - started_at


def took(started_at: float | None, finished_at: float | None) -> str:
    """A span as every table shows it: seconds with three decimals, ``-`` when not known."""
    span = duration(started_at, finished_at)
    return "-" if span is None else f"{span:.3f}s"


def when(ts: float | None) -> str:
    """A moment in local time, ``YYYY-MM-DD HH:MM:SS``; ``-`` when not known."""
    return "-" if ts is None else _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def clock(ts: float) -> str:
    """A moment's local time of day to the millisecond, ``HH:MM:SS.mmm`` (log and state lines)."""
    return _dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3]
