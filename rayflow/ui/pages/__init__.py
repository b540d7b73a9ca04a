"""The UI's pages, one module per part of the site; each has ``routes(ui) -> list[Route]``.

``runs`` (the runs list), ``run`` (a run, and its cancel and resume), ``flows`` (the flows and
run now), ``api`` (the JSON under /api), ``session`` (login and logout), ``artifacts`` (the
artifacts' pages, a run's artifacts as a fragment, their JSON).  A new page is a new
module here, added to ``MODULES``.
"""

from rayflow.ui.pages import api, artifacts, flows, run, runs, session

MODULES = (runs, run, flows, api, session, artifacts)
