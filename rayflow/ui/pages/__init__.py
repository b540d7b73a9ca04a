"""The UI's pages, one module per part of the site; each has ``routes(ui) -> list[Route]``.

``dashboard`` (``/``), ``runs`` (the runs list), ``run`` (a run, and its cancel and resume),
``flows`` (the flows and run now), ``flow`` (a flow's page), ``maps`` (a map of a run and its
items), ``tasks`` (a task of a run), ``api`` (the JSON under /api), ``session`` (login and
logout), ``artifacts`` (the artifacts' pages, a run's artifacts as a fragment, their JSON),
``approvals`` (approve or reject a paused task, from its run's page).
A new page is a new module here, added to ``MODULES``.
"""

from rayflow.ui.pages import api, approvals, artifacts, dashboard, flow, flows, maps, run, runs, session, tasks

MODULES = (dashboard, runs, run, flows, flow, maps, tasks, api, session, artifacts, approvals)
