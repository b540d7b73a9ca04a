"""Views of the run history, the same for the CLI and the web UI: a run's task rows (last state,
attempts, duration, item counts of maps, error or note), item counts from chunk rows, and the
order of task keys with subflows as groups."""

from __future__ import annotations

import bisect
import os

from rayflow.states import FAILED_TYPES, StateType

FAILED = {t.value for t in FAILED_TYPES}
STATES_SHOWN = tuple(t.value for t in StateType)  # what a run's or a task's state may read
JAEGER_URL = "http://localhost:16686"
COLOURS = {
    "SUCCESS": "#9be39b", "MAPPED": "#9be39b", "CACHED": "#9be39b", "SKIPPED": "#cfd8dc",
    "FAILED": "#f28b82", "TIMED_OUT": "#f28b82", "TRIGGER_FAILED": "#fbbc04", "CANCELLED": "#bdbdbd",
    "RUNNING": "#aecbfa", "RETRYING": "#fdd663", "PENDING": "#ffffff",
}


def state_filter(state: str | None) -> str | None:
    """A ``--state`` value, upper-cased, or ValueError naming the states there are."""
    if state is None:
        return None
    if state.upper() not in STATES_SHOWN:
        raise ValueError(f"--state is one of {', '.join(STATES_SHOWN)}, not {state!r}")
    return state.upper()


def trace_url(trace_id: str | None) -> str | None:
    """The run's trace in Jaeger (``RAYFLOW_JAEGER_URL``, default http://localhost:16686)."""
    if not trace_id:
        return None
    return f"{os.environ.get('RAYFLOW_JAEGER_URL', JAEGER_URL).rstrip('/')}/trace/{trace_id}"


def run_record(run: dict) -> dict:
    """A run as ``rayflow show --json`` and ``/api/runs/{id}`` give it."""
    out = {k: v for k, v in run.items() if k not in ("transitions", "chunks")}
    return {**out, "trace_url": trace_url(run["trace_id"]), "task_rows": task_rows(run), "chunks": run["chunks"]}


def subflow_keys(keys: list[str], known: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """The keys that are subflows: those others are keyed under (``inner`` for ``inner/inc``), and ``known``."""
    return set(known) | {k.rpartition("/")[0] for k in keys if "/" in k}


def grouped(keys: list[str], subflows: set[str] | None = None) -> list[tuple[str, int]]:
    """Task keys with each subflow's own row moved before its tasks, and each key's depth.

    A key is a subflow when others are keyed under it (``inner`` for ``inner/inc``), or when
    ``subflows`` says so (a subflow with no tasks).
    """
    present = set(keys)
    subflows = subflow_keys(keys, subflows or frozenset())
    out: list[tuple[str, int]] = []
    placed: set[str] = set()

    def place(key: str) -> None:
        if key in placed:
            return
        group = key.rpartition("/")[0]
        if group and group in subflows and group in present:
            place(group)
        placed.add(key)
        out.append((key, key.count("/")))

    for key in keys:
        if key in subflows:
            members = [k for k in keys if k.startswith(key + "/")]
            if members and any(m not in placed for m in members):
                continue  # placed before its first member
        place(key)
    for key in keys:  # subflows whose members were all placed already
        place(key)
    return out


def _duration(started_at: float | None, finished_at: float | None) -> float | None:
    return None if started_at is None or finished_at is None else finished_at - started_at


ENDED_FROM_OUTSIDE = ("CRASHED", "CANCELLED")  # run states its driver or a reader may have decided


def task_rows(run: dict) -> list[dict]:
    """One entry per task: last state, attempts, duration, item counts for maps, last error.

    The duration is the last state's own ``started_at``..``finished_at``, what ``rayflow run``
    prints from the final state: the last attempt's run time as measured where it ran (for a
    map, the map's span); ``None`` for a task that never ran or is running now.
    """
    by_task: dict[str, dict] = {key: {"task": key, "state": "PENDING", "attempts": 0} for key in run["tasks"]}
    for t in run["transitions"]:
        entry = by_task.setdefault(t["task_key"], {"task": t["task_key"], "attempts": 0})
        entry["state"] = t["state"]
        if t["state"] == "RUNNING":
            entry["attempts"] = max(entry["attempts"], t["attempt"] or 1)
            entry.pop("note", None)
        elif t["state"] == "PENDING" and t["message"]:  # waiting for a limit's slot
            entry["note"] = t["message"]
        entry["started_at"], entry["finished_at"] = t["started_at"], t["finished_at"]
        entry["duration"] = _duration(t["started_at"], t["finished_at"])
        if (t["state"] in FAILED or t["state"] == "RETRYING") and t["message"]:
            entry["error"] = t["message"]
        elif t["state"] in ("SUCCESS", "CACHED") and (t["message"] or "").startswith(("cache ", "resumed from")) or t["state"] == "MAPPED" and "; first error: " in (t["message"] or ""):
            entry["note"] = t["message"]
    if run.get("state") in ENDED_FROM_OUTSIDE:  # its actor was gone: no one recorded its tasks' ends
        for entry in by_task.values():
            if entry["state"] in ("PENDING", "RUNNING", "RETRYING"):
                entry["state"] = run["state"]
    chunks: dict[str, list[dict]] = {}
    for chunk in run["chunks"]:
        chunks.setdefault(chunk["task_key"], []).append(chunk)
    for key, rows in chunks.items():
        by_task.setdefault(key, {"task": key, "state": "PENDING", "attempts": 0})["items"] = map_items(rows)
    shape = run.get("graph") or {"nodes": []}
    kinds = {n["key"]: n["kind"] for n in shape["nodes"]}
    subflows = subflow_keys(list(by_task), {k for k, kind in kinds.items() if kind == "subflow"})
    order = grouped(list(by_task), subflows)
    out = []
    for key, depth in order:  # a subflow's row first, then its tasks: a group
        row = by_task[key]
        row["group"] = key.rpartition("/")[0]
        row["depth"] = depth
        row["subflow"] = key in subflows
        out.append(row)
    return out


RETRIED = ("RETRYING", "TIMED_OUT", "FAILED")  # the states an item is run again from


def item_states(chunk_rows: list[dict]) -> dict[str, int]:
    """How many items of a map are in each state now, each item counted once, in its last state.

    The history has one row per chunk *attempt*, all under the chunk's start/stop: the
    chunk's first work reports every item of the chunk, and each retry work reports only
    the items it ran again, those that were RETRYING (always run again), TIMED_OUT (always
    retryable) or FAILED (retryable).  So per chunk, in the order the works ran, a retry
    row's items are first taken out of the states they were retried from (RETRYING, then
    TIMED_OUT, then FAILED; the latest rows first), then counted in their new states.  A
    row without counts is a work lost with its worker: when it was run again, the new row
    counts its items; when it was not, its items failed.  A chunk whose first run was lost
    may have been split in two chunks, each with rows of its own under its own range
    (narrowing a dead worker down to its item): a chunk with only lost rows counts as
    FAILED just its items that no narrower chunk took over.
    """
    by_chunk: dict[tuple[int, int], list[dict]] = {}
    for row in chunk_rows:
        by_chunk.setdefault((row["start"], row["stop"]), []).append(row)
    spans = sorted(by_chunk)
    out: dict[str, int] = {}
    for (start, stop), rows in by_chunk.items():
        states = _chunk_states(stop - start, rows)
        if not any(row["counts"] for row in rows):  # every work of it was lost: split, or failed
            states = {"FAILED": stop - start - _taken_over(spans, start, stop)}
        for state, n in states.items():
            if n:
                out[state] = out.get(state, 0) + n
    return out


def _taken_over(spans: list[tuple[int, int]], start: int, stop: int) -> int:
    """Items of [start, stop) inside narrower chunk ranges (``spans`` sorted): those its split made."""
    covered, reach = 0, start
    for lo, hi in spans[bisect.bisect_left(spans, (start, start)) :]:  # from the first starting at start
        if lo >= stop:
            break
        if hi > stop or (lo, hi) == (start, stop):
            continue
        lo = max(lo, reach)
        if hi > lo:
            covered += hi - lo
            reach = hi
    return covered


def _chunk_states(size: int, rows: list[dict]) -> dict[str, int]:
    def ran_at(row: dict) -> float:
        return row["started_at"] if row["started_at"] is not None else row["finished_at"] or 0.0

    counted = sorted((r for r in rows if r["counts"]), key=ran_at)
    lost = len(counted) < len(rows)
    if not counted:  # every work of this chunk was lost: its items failed
        return {"FAILED": size} if lost else {}
    standing: list[dict[str, int]] = []  # per row: its items not run again since
    owed = 0  # items run again, still to take out of an earlier state
    for row in counted:
        if standing:
            owed += sum(row["counts"].values())
        for state in RETRIED:
            for earlier in reversed(standing):
                taken = min(owed, earlier.get(state, 0))
                if taken:
                    earlier[state] -= taken
                    owed -= taken
        standing.append(dict(row["counts"]))
    states: dict[str, int] = {}
    for row_states in standing:
        for state, n in row_states.items():
            states[state] = states.get(state, 0) + n
    if lost and states.get("RETRYING"):  # their retry's work was lost for good
        states["FAILED"] = states.get("FAILED", 0) + states.pop("RETRYING")
    return states


def map_items(chunk_rows: list[dict]) -> dict:
    """A map's item counts: total, done (in a final state), ok, failed, skipped, and per state.

    ``ok`` is what the map's own summary calls ok (every item that did not fail, skipped
    ones included), so ``rayflow show`` and ``rayflow run`` give the same numbers.
    """
    states = item_states(chunk_rows)
    total = sum(states.values())
    failed = sum(n for s, n in states.items() if s in FAILED)
    return {
        "total": total,
        "done": total - states.get("RETRYING", 0),
        "ok": total - failed - states.get("RETRYING", 0),
        "failed": failed,
        "skipped": states.get("SKIPPED", 0),
        "cached": states.get("CACHED", 0),
        "states": dict(sorted(states.items())),
    }
