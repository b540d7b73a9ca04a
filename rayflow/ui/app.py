"""The Starlette application of ``rayflow ui``: the pages of ``rayflow.ui.pages`` behind the
security middleware (``security``), over one history."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from rayflow.store.history import RunStore
from rayflow.ui import security
from rayflow.ui.context import HERE, UI
from rayflow.ui.pages import MODULES
from rayflow.ui.pages.session import login_page
from rayflow.ui.security import SecurityHeaders, Sessions, TokenGate


def create_app(
    home: str | pathlib.Path | None = None,
    actions: Any = None,
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    allowed_hosts: Sequence[str] = (),
) -> Starlette:
    """The UI over ``home``'s history; ``actions`` (``ui.actions.ServeActions``, given by ``rayflow
    serve --ui``) adds run now, cancel and resume; without them every page is read-only.  It answers
    the ``Host`` names of ``security.allowed_hosts(host, allowed_hosts)`` only; with ``token``,
    only requests that carry it (``security``)."""
    ui = UI(RunStore(home), actions, Sessions(token) if token is not None else None)
    routes = [route for module in MODULES for route in module.routes(ui)]
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    middleware = [  # outermost first: every response gets the headers, the host check comes before the token
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=security.allowed_hosts(host, allowed_hosts), www_redirect=False),
    ]
    if ui.sessions is not None:
        middleware.append(
            Middleware(TokenGate, sessions=ui.sessions, login_page=lambda request, *a, **k: login_page(ui, request, *a, **k))
        )
    return Starlette(routes=routes, middleware=middleware)
