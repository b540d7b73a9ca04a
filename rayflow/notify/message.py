"""What a notification says: one event (a state of a task or flow, or an SLA miss) as a JSON
document (webhook), a Slack incoming webhook's message, or an e-mail.

It names the flow, run, task, state, message and error, and links to the run's page in the UI
(``RAYFLOW_UI_URL``).  Parameters are never part of it: a secret parameter cannot leak."""

from __future__ import annotations

import os
import time
from email.message import EmailMessage
from typing import Any

MAX_TEXT = 2000  # characters of a state's message or error kept


def ui_link(base: str | None, run_id: str) -> str | None:
    base = base or os.environ.get("RAYFLOW_UI_URL") or None
    return f"{base.rstrip('/')}/runs/{run_id}" if base else None


def event(*, kind: str, flow: str, run_id: str | None, task: str | None, state: str, message: str | None,
          error: str | None, ui_url: str | None = None, at: float | None = None) -> dict[str, Any]:
    """The fields every format is made from; ``kind``: "state", "late" or "overdue"."""
    return {
        "kind": kind,
        "flow": flow,
        "run_id": run_id,
        "task": task,
        "state": state,
        "message": (message or "")[:MAX_TEXT] or None,
        "error": (error or "")[:MAX_TEXT] or None,
        "url": ui_link(ui_url, run_id) if run_id else None,
        "at": at if at is not None else time.time(),
    }


def state_event(run: Any, new: Any, ui_url: str | None) -> dict[str, Any]:
    """An event of a state ``new`` of the task (or flow) a ``HandlerRun`` names."""
    error = f"{new.error.type}: {new.error.message}" if getattr(new, "error", None) is not None else None
    return event(kind="state", flow=run.flow_name, run_id=run.run_id, task=run.task_key, state=new.type.value,
                 message=new.message, error=error, ui_url=ui_url, at=new.timestamp)


def title(ev: dict[str, Any]) -> str:
    what = f"task {ev['task']} of flow {ev['flow']}" if ev.get("task") else f"flow {ev['flow']}"
    run = f" (run {ev['run_id']})" if ev.get("run_id") else ""
    return f"rayflow: {what}{run} is {ev['state']}"


def lines(ev: dict[str, Any]) -> list[str]:
    out = [title(ev)]
    if ev.get("message"):
        out.append(f"Message: {ev['message']}")
    if ev.get("error"):
        out.append(f"Error: {ev['error']}")
    if ev.get("url"):
        out.append(f"Run: {ev['url']}")
    return out


def slack(ev: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming webhook's message: ``text`` (the fallback) and ``blocks``."""
    fields = [{"type": "mrkdwn", "text": f"*{name}:* {ev[key]}"}
              for name, key in (("Flow", "flow"), ("Run", "run_id"), ("Task", "task"), ("State", "state"))
              if ev.get(key)]
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{title(ev)}*"}}]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    detail = [x for x in (ev.get("message"), ev.get("error") and f"Error: {ev['error']}") if x]
    if detail:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(detail)[:2900]}})
    if ev.get("url"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{ev['url']}|Open the run>"}})
    return {"text": "\n".join(lines(ev)), "blocks": blocks}


def email(ev: dict[str, Any], sender: str, to: tuple[str, ...]) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = title(ev)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg.set_content("\n".join(lines(ev)) + "\n")
    return msg
