"""A task of a run (``/runs/{run_id}/tasks/{key}``): its states in order with their messages and
times, attempts, the cache's hit or miss and why, where its result was persisted, its artifacts
(engineer C's fragment, loaded by htmx), its log records and traceback; a map links to its page.

What it shows is what the engine recorded: the cache's answer is the message of the state the
worker decided (``cache hit: PATH``, ``resumed from PATH``, ``cache miss: why``; see
``engine.worker.results``), the persisted result's place is the run's result store (recorded
with its graph) and the task's name in it (``results_layout.persist_name``) for a task the
run persisted (its graph's ``code``: each persisting task's code fingerprint).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rayflow.presentation import UNFINISHED
from rayflow.results_layout import chunk_folder, persist_name
from rayflow.store.views import task_rows
from rayflow.ui.context import UI
from rayflow.ui.pages.maps import is_map


def cache_outcome(transitions: list[dict]) -> dict | None:
    """The cache's answer for the task's last attempt, from the state's message the worker recorded:
    ``{"outcome": hit | resumed | miss | refreshed, "detail": path or why}``; None: no cache lookup."""
    for t in reversed(transitions):
        message = t["message"] or ""
        if t["state"] == "CACHED":
            if message.startswith("resumed from "):
                return {"outcome": "resumed", "detail": message.removeprefix("resumed from ")}
            return {"outcome": "hit", "detail": message.removeprefix("cache hit:").strip()}
        if t["state"] in ("SUCCESS", "FAILED", "RUNNING"):
            if message.startswith("cache miss"):
                return {"outcome": "miss", "detail": message.removeprefix("cache miss:").strip()}
            if message.startswith("cache refreshed"):
                return {"outcome": "refreshed", "detail": message}
            if t["state"] != "RUNNING":
                return None
    return None


def persisted(run: dict, key: str, kind: str, state: str) -> dict | None:
    """Where the run persisted the task's result: {"store", "name", "written"}; None: not persisted."""
    graph = run.get("graph") or {}
    if key not in (graph.get("code") or {}):
        return None
    name = chunk_folder(run["run_id"], key) if kind == "map" else persist_name(run["run_id"], key) + ".{arrow,pkl}"
    failed = f"task '{key}': its result could not be persisted" in (run.get("message") or "")
    written = "failed" if failed else "yes" if state in ("SUCCESS", "CACHED", "MAPPED") else "no"
    return {"store": graph.get("results"), "name": name, "written": written}


def routes(ui: UI) -> list[Route]:
    store = ui.store

    async def task_page(request: Request) -> Response:
        run_id, key = request.path_params["run_id"], request.path_params["key"]
        run = store.task_record(run_id, key)
        if run is None:
            return ui.missing(request, "run", run_id)
        if key not in run["tasks"] and not run["transitions"]:
            return ui.missing(request, f"task of run {run_id}", key)
        row = next(r for r in task_rows(run) if r["task"] == key)
        nodes = {n.get("key"): n for n in (run.get("graph") or {}).get("nodes") or []}
        kind = "map" if is_map(run, key) else (nodes.get(key) or {}).get("kind", "task")
        tracebacks = [t for t in run["transitions"] if t["traceback"]]
        logs, older = store.task_logs(run_id, key)
        return ui.page(
            request, "task.html", run=run, key=key, row=row, kind=kind, transitions=run["transitions"],
            cache=cache_outcome(run["transitions"]), persisted=persisted(run, key, kind, row["state"]),
            traceback=tracebacks[-1] if tracebacks else None, logs=logs, older_logs=older,
            upstream=(nodes.get(key) or {}).get("upstream") or [], live=run["state"] in UNFINISHED,
        )

    return [Route("/runs/{run_id}/tasks/{key:path}", task_page)]
