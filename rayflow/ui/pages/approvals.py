"""Approve or reject a paused task from its run's page: ``POST /runs/{run_id}/approve`` and
``/runs/{run_id}/reject`` (the form names the task, and the item of a map).  The approve form
is built from the pause's input model (its JSON schema, recorded when the task paused: a field
per property, a select for an enum, a checkbox for a bool); the input is checked by
runs.approval, so a bad value is refused (409) naming the field, and the task stays paused.

Who may decide: the UI of ``serve --ui``, or ``rayflow ui`` with a token (a person signed in),
each POST with its CSRF token (ui.context.refused_post).  Decisions are recorded as by ``ui``.
A run whose driver is gone is resumed by ``serve --ui`` (its actions) after an approval or a
reject; under ``rayflow ui`` the decision is recorded and the page says to resume the run
(``rayflow resume``).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from rayflow.exceptions import RayflowError
from rayflow.presentation import ACTIVE
from rayflow.store.approvals import PauseStore
from rayflow.ui.context import UI

INPUT = "input."  # the approve form's field names: input.<property>, apart from csrf_token and task


def may_decide(ui: UI) -> bool:
    return ui.actions is not None or ui.sessions is not None


def waiting(ui: UI, run: dict, tasks: list[dict]) -> list[dict]:
    """The run's pauses waiting for a decision, each with the fields of its approve form."""
    states = {t["task"]: t["state"] for t in tasks}
    if not any(state in ACTIVE for state in states.values()):
        return []
    rows = [
        p for p in PauseStore(ui.store).pauses(run["run_id"])
        if p["decision"] is None and (states.get(p["task_key"]) == "PAUSED" or p["map_index"] is not None and states.get(p["task_key"]) in ACTIVE)
    ]
    return [p | {"fields": form_fields(p["schema"])} for p in rows]


def form_fields(schema: dict | None) -> list[dict]:
    """One form field per property of an input model's JSON schema: name, label, kind (text,
    number, checkbox, select), options, required, default text."""
    if not schema:
        return []
    required = set(schema.get("required") or ())
    fields = []
    for name, prop in (schema.get("properties") or {}).items():
        prop = _resolved(schema, prop)
        kind = {"integer": "number", "number": "number", "boolean": "checkbox"}.get(prop.get("type"), "text")
        options = [str(v) for v in prop.get("enum") or ()]
        default = prop.get("default")
        fields.append({
            "name": name, "label": prop.get("title") or name, "kind": "select" if options else kind, "options": options,
            "required": name in required, "default": "" if default is None else str(default).lower() if isinstance(default, bool) else str(default),
            "step": "1" if prop.get("type") == "integer" else "any",
        })
    return fields


def _resolved(schema: dict, prop: dict) -> dict:
    ref = prop.get("$ref") or next((p.get("$ref") for p in prop.get("allOf") or () if "$ref" in p), None)
    if ref and ref.startswith("#/$defs/"):
        return {**(schema.get("$defs") or {}).get(ref.split("/")[-1], {}), **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def input_of(form: Any, schema: dict | None) -> Any:
    """The approve form's fields as the input (None without a model): empty fields left out (their
    defaults apply), a checkbox as a bool, a string property as text, others read as JSON."""
    if not schema:
        return None
    props = schema.get("properties") or {}
    value: dict[str, Any] = {}
    for name, prop in props.items():
        prop = _resolved(schema, prop)
        if prop.get("type") == "boolean":
            value[name] = form.get(INPUT + name) in ("on", "true", "1")
            continue
        raw = form.get(INPUT + name)
        if not isinstance(raw, str) or raw == "":
            continue
        if prop.get("type") == "string" or prop.get("enum"):
            value[name] = raw
        else:
            try:
                value[name] = json.loads(raw)
            except json.JSONDecodeError:
                value[name] = raw  # refused by the schema, naming the field
    return value


def routes(ui: UI) -> list[Route]:
    store = ui.store

    def decide(approving: bool) -> Any:
        async def route(request: Request) -> Response:
            if not may_decide(ui):
                return PlainTextResponse("read-only: approvals need `rayflow ui` with a token, or `serve --ui`", status_code=403)
            if (no := await ui.refused_post(request)) is not None:
                return no
            run_id = request.path_params["run_id"]
            run = store.run(run_id)
            if run is None:
                return ui.missing(request, "run", run_id)
            form = await request.form()
            task = form.get("task")
            item = form.get("item")
            index = int(item) if isinstance(item, str) and item.isdigit() else None
            if not isinstance(task, str) or not task:
                return ui.page(request, "error.html", 400, message="the form names no task")
            try:
                await run_in_threadpool(_decide, ui, run, task, index, approving, form)
            except RayflowError as exc:  # refused: the reason (the field named), the task stays paused
                return ui.page(request, "error.html", 409, message=str(exc))
            return RedirectResponse(f"/runs/{run_id}", status_code=303)

        return route

    return [
        Route("/runs/{run_id}/approve", decide(True), methods=["POST"]),
        Route("/runs/{run_id}/reject", decide(False), methods=["POST"]),
    ]


def _decide(ui: UI, run: dict, task: str, index: int | None, approving: bool, form: Any) -> None:
    from rayflow.runs.approval import approve, reject, run_is_live

    run_id = run["run_id"]
    if not approving:
        reason = form.get("reason")
        reject(run_id, task, reason if isinstance(reason, str) else "", map_index=index, by="ui", resume=False, home=ui.store.home)
    else:
        pause = PauseStore(ui.store).pause(run_id, task, index)
        value = input_of(form, pause["schema"] if pause else None)
        approve(run_id, task, value, map_index=index, by="ui", resume=False, home=ui.store.home)
    if not run_is_live(run_id, ui.store.home) and ui.actions is not None:  # its driver is gone: serve resumes it
        ui.actions.resume(run_id, run["flow"])
