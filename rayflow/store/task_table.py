"""A run's task table, one definition for ``rayflow run``, ``rayflow show`` (from the history or
live from the run's driver) and the UI's run page: its columns, their order, each cell's text,
and the rows' order (a subflow's row first, then its tasks, indented by depth).

Every source is first turned into *task rows* of one shape, the one ``views.task_rows`` gives
for a recorded run: ``task``, ``state``, ``attempts``, ``started_at``, ``finished_at``,
``items`` (a map's counts, or absent), ``error`` / ``note``, ``depth``.  ``live_rows`` does it
for a live status, ``flow_run_rows`` for a finished ``FlowRun``; ``cells`` turns a row into the
text of each column.
"""

from __future__ import annotations

from typing import Any

from rayflow.presentation import FAILED, took
from rayflow.store.views import grouped

COLUMNS = ("task", "state", "attempts", "duration", "items", "error / note")
STATE_COLUMN = COLUMNS.index("state")
MESSAGE_CHARS = 200  # of the first line of an error or note


def items_text(items: dict | None) -> str:
    """A map's counts, ``8 done/1 failed/1 skipped`` (``/2 cached`` when some were cached);
    live, while the map goes on, ``5/10 done/...`` (done of the items it will have)."""
    if not items:
        return ""
    done = f"{items['done']}"
    expected = items.get("expected")
    if expected is not None and expected != items["done"]:
        done += f"/{expected}"
    text = f"{done} done/{items['failed']} failed/{items['skipped']} skipped"
    return text + (f"/{items['cached']} cached" if items.get("cached") else "")


def message_text(row: dict) -> str:
    """The first line of a row's error, else of its note (at most ``MESSAGE_CHARS``)."""
    text = row.get("error") or row.get("note") or ""
    return text.split("\n", 1)[0][:MESSAGE_CHARS]


def cells(row: dict) -> list[str]:
    """The text of each column of ``COLUMNS`` for one task row."""
    return [
        row["task"], row["state"], str(row["attempts"]), took(row.get("started_at"), row.get("finished_at")),
        items_text(row.get("items")), message_text(row),
    ]


def live_rows(status: dict) -> list[dict]:
    """Task rows of a live status (``runtime.live_status``): its tasks, and its maps' counts so far."""
    out = []
    for key, depth in grouped(list(status["tasks"])):
        task = status["tasks"][key]
        row = {
            "task": key, "state": task["state"], "attempts": _attempts(task["state"], task["attempt"], task["started_at"]),
            "depth": depth,
            "started_at": task["started_at"], "finished_at": task["finished_at"],
        }
        if task["message"]:
            row["error" if task["state"] in FAILED or task["state"] == "RETRYING" else "note"] = task["message"]
        progress = status["maps"].get(key)
        if progress:
            counts = progress["counts"]
            row["items"] = {
                "done": sum(counts.values()), "expected": progress["total"],
                "failed": sum(n for s, n in counts.items() if s in FAILED),
                "skipped": counts.get("SKIPPED", 0), "cached": counts.get("CACHED", 0),
            }
        out.append(row)
    return out


def flow_run_rows(flow_run: Any) -> list[dict]:
    """Task rows of a ``FlowRun`` (what ``rayflow run`` has at the end): each task's final state."""
    out = []
    for key, depth in grouped(list(flow_run.task_states)):
        state = flow_run.task_states[key]
        row = {
            "task": key, "state": state.type.value, "attempts": _attempts(state.type.value, state.attempt, state.started_at),
            "depth": depth,
            "started_at": state.started_at, "finished_at": state.finished_at,
        }
        if state.message:
            row["error" if state.is_failed() else "note"] = state.message
        out.append(row)
    return out


def _attempts(state: str, attempt: int, started_at: float | None) -> int:
    """Attempts as the history counts them (``views.task_rows``): a task that never ran (skipped,
    cancelled while pending) has 0, though its state says attempt 1."""
    return attempt if started_at is not None or state == "RUNNING" else 0
