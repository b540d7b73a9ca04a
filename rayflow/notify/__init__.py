"""Notifications: ``rf.notify.webhook``, ``rf.notify.slack`` and ``rf.notify.email``.

Each is a state handler for tasks and flows (``on_failure=rf.notify.slack(URL)``, or
``on_state=rf.notify.webhook(URL, states=["FAILED", "CRASHED"])``) and a target of a flow's SLA
(``rf.SLA(notify=[...])``).  Deliveries go in the background (``sender``): a run never waits on
one beyond a short flush at its end, and a failed one is a warning in the run's logs.  Messages
name the flow, run, task, state, message and error, with a link to the run in the UI
(``RAYFLOW_UI_URL``); never a parameter (``message``)."""

from rayflow.notify.channels import Email, Notifier, Slack, Webhook, email, slack, webhook
from rayflow.notify.sender import flush

__all__ = ["Email", "Notifier", "Slack", "Webhook", "email", "flush", "slack", "webhook"]
