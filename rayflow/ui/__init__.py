"""``rayflow ui``: pages over the run history, served by Starlette with Jinja2 templates.

Read-only: every page reads ``RAYFLOW_HOME``'s history through ``RunStore``
(one short SQLite read per request) and renders server-side; htmx (vendored
in ``static/``, no CDN) refreshes the runs table while runs are live.  The
JSON under ``/api`` is what ``rayflow runs --json`` and ``rayflow show
--json`` print.  ``security`` decides who may use it (the Host allow-list,
the token, CSRF, the headers); ``queries`` checks what a URL asks for.
"""

from rayflow.ui.app import create_app

__all__ = ["create_app"]
