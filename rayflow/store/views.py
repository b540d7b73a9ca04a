"""Views of the run history, the same for the CLI and the web UI: a run's task rows (last state,
attempts, duration, item counts of maps, error or note), item counts from chunk rows, and the
order of task keys with subflows as groups."""

from __future__ import annotations

import os

from rayflow.presentation import ACTIVE, FAILED, STATE_NAMES
from rayflow.presentation import duration as _duration

JAEGER_URL = "http://localhost:16686"


def state_filter(state: str | None, option: str = "--state") -> str | None:
    """A state given as ``option``, upper-cased, or ValueError naming the states there are."""
    if state is None:
        return None
    if state.upper() not in STATE_NAMES:
        raise ValueError(f"{option} is one of {', '.join(STATE_NAMES)}, not {state!r}")
    return state.upper()


def trace_url(trace_id: str | None) -> str | None:
    """The run's trace in Jaeger (``RAYFLOW_JAEGER_URL``, default http://localhost:16686)."""
    if not trace_id:
        return None
    return f"{os.environ.get('RAYFLOW_JAEGER_URL', JAEGER_URL).rstrip('/')}/trace/{trace_id}"


def run_record(run: dict) -> dict:
    """A run as ``rayflow show --json`` and ``/api/runs/{id}`` give it: with ``failed_items``, the
    first of its map items that failed, as the engine recorded them (``RunStore.items`` pages all)."""
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
        elif t["state"] in ("PENDING", "PAUSED") and t["message"]:  # waiting for a limit's slot, for a person
            entry["note"] = t["message"]
        elif t["started_at"] is not None:  # ran without a RUNNING row of its own (a subflow): as `run` counts it
            entry["attempts"] = max(entry["attempts"], t["attempt"] or 1)
        entry["started_at"], entry["finished_at"] = t["started_at"], t["finished_at"]
        entry["duration"] = _duration(t["started_at"], t["finished_at"])
        if (t["state"] in FAILED or t["state"] == "RETRYING") and t["message"]:
            entry["error"] = t["message"]
        elif t["state"] in ("SUCCESS", "CACHED") and (t["message"] or "").startswith(("cache ", "resumed from")) or t["state"] == "MAPPED" and "; first error: " in (t["message"] or ""):
            entry["note"] = t["message"]
    if run.get("state") in ENDED_FROM_OUTSIDE:  # its actor was gone: no one recorded its tasks' ends
        for entry in by_task.values():
            if entry["state"] in ACTIVE:
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


def item_states(chunk_rows: list[dict]) -> dict[str, int]:
    """How many items of a map are in each state now: the sum of its chunk rows' counts, which the
    engine recorded as it decided them (maps.outcomes, ``WorkFacts``): each row counts the items
    its work made final, and RETRYING the items it sent to run again less those it ran again
    (PAUSED likewise, for the items it sent to wait for a person's decision: rf.pause).
    No replay of the map's retries, losses and splits: those were decided once, by the engine."""
    out: dict[str, int] = {}
    for row in chunk_rows:
        for state, n in row["counts"].items():
            out[state] = out.get(state, 0) + n
    return {state: n for state, n in out.items() if n}


def map_items(chunk_rows: list[dict]) -> dict:
    """A map's item counts: total, done (in a final state), ok, failed, skipped, paused (waiting for
    a decision), and per state.

    ``ok`` is what the map's own summary calls ok (every item that did not fail, skipped
    ones included), so ``rayflow show`` and ``rayflow run`` give the same numbers.
    """
    states = item_states(chunk_rows)
    total = sum(states.values())
    failed = sum(n for s, n in states.items() if s in FAILED)
    waiting = states.get("RETRYING", 0) + states.get("PAUSED", 0)
    return {
        "total": total,
        "done": total - waiting,
        "ok": total - failed - waiting,
        "failed": failed,
        "paused": states.get("PAUSED", 0),
        "skipped": states.get("SKIPPED", 0),
        "cached": states.get("CACHED", 0),
        "states": dict(sorted(states.items())),
    }
