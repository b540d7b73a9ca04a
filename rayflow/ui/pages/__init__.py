"""The UI's pages, one module per part of the site; each has ``routes(ui) -> list[Route]``.

``runs`` (the runs list), ``run`` (a run, and its cancel and resume), ``flows`` (the flows and
run now), ``api`` (the JSON under /api), ``session`` (login and logout), ``maps`` (a map of a run and its items),
``tasks`` (a task of a run).  A new page is a new
module here, added to ``MODULES``.
"""

from rayflow.ui.pages import api, flows, maps, run, runs, session, tasks

MODULES = (runs, run, flows, api, session, maps, tasks)
