"""What every page of the UI shares: the history, the templates, the actions of ``serve --ui``,
the login sessions and the CSRF tokens; ``page`` renders a template with them."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from rayflow.presentation import FAILED, category, colour, took, when
from rayflow.store.history import RunStore
from rayflow.store.task_table import COLUMNS, cells
from rayflow.ui.queries import QueryError
from rayflow.ui.security import Csrf, Sessions

HERE = pathlib.Path(__file__).parent
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_ECHO = 200  # the characters of an unknown name a 404 repeats


def templates() -> Environment:
    """The Jinja2 environment of the UI's templates, with the filters and globals they use."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters["when"] = when
    env.filters["took"] = lambda row: took(row.get("started_at"), row.get("finished_at"))
    env.globals["state_class"] = category
    env.globals["state_colour"] = colour
    env.globals["failed_states"] = FAILED
    env.globals["task_columns"] = COLUMNS  # the run's task table: one definition with the CLI's
    env.globals["task_cells"] = cells
    env.globals["zip"] = zip
    return env


@dataclass
class UI:
    """One UI app's shared parts; every module of ``rayflow.ui.pages`` takes it."""

    store: RunStore
    actions: Any = None  # ui.actions.ServeActions under ``serve --ui``; None: read-only
    sessions: Sessions | None = None  # None: no login token
    csrf: Csrf = field(default_factory=Csrf)
    env: Environment = field(default_factory=templates)

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """``template`` rendered with ``context`` (and the actions, CSRF token, login)."""
        form_token, cookie = self.csrf.token(request)
        text = self.env.get_template(template).render(
            actions=self.actions, csrf_token=form_token, login=self.sessions is not None, path=request.url.path, **context,
        )
        response = HTMLResponse(text, status_code=status)
        if cookie is not None:
            response.headers.append("set-cookie", cookie)
        return response

    def bad_query(self, request: Request, exc: QueryError | ValueError) -> Response:
        """400 with the reason: JSON under /api, the error page elsewhere."""
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=400)
        return self.page(request, "error.html", 400, message=str(exc))

    def missing(self, request: Request, what: str, name: str) -> Response:
        """404 for an unknown ``what`` (run, flow, map, artifact) called ``name`` (its first
        ``MAX_ECHO`` characters: a path of megabytes is not echoed whole)."""
        name = name if len(name) <= MAX_ECHO else name[:MAX_ECHO] + "…"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": f"no {what} {name!r}"}, status_code=404)
        return self.page(request, "missing.html", 404, what=what, name=name)

    async def refused_post(self, request: Request) -> Response | None:
        """Why a POST is refused: not a form (415), posted from another site's page, or without
        the CSRF token of a page of this UI (403); None: it may go on.  A request with a Bearer
        token is a script's (a browser never adds one for another site): it needs no CSRF token."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != FORM_TYPE:
            return PlainTextResponse(f"unsupported content type {content_type or 'none'!r}: post a form ({FORM_TYPE})", status_code=415)
        if cross_origin(request):
            return PlainTextResponse("refused: this action was posted from another site's page", status_code=403)
        if request.scope.get("state", {}).get("auth") == "bearer":
            return None
        form = await request.form()
        given = form.get("csrf_token")
        if not self.csrf.valid(request, given if isinstance(given, str) else None):
            return PlainTextResponse("refused: no valid CSRF token (reload the page and try again)", status_code=403)
        return None

    async def refused_action(self, request: Request) -> Response | None:
        """Why an action (run now, cancel, resume) is not taken, after reading its form; None: it may be."""
        if self.actions is None:
            return PlainTextResponse("read-only: actions need the UI of `rayflow serve --ui`", status_code=403)
        if self.actions.starting():
            return PlainTextResponse(
                "starting: the server is joining Ray; try again in a moment", status_code=503, headers={"Retry-After": "2"},
            )
        return await self.refused_post(request)


def cross_origin(request: Request) -> bool:
    """Whether a browser sent this POST from another site's page (cross-site request forgery:
    a page elsewhere posting a form to http://127.0.0.1:4200/...).  Browsers name the page's
    origin in ``Origin`` (and ``Sec-Fetch-Site``).  The ``Host`` it is compared with has passed
    the host check, so a rebound name cannot make the two agree."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == "null" or urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


def local_path(path: str) -> str:
    """Where to go after the login: a path of this UI, never another site (``//evil``, ``/\\evil``)."""
    if not path.startswith("/") or path.startswith(("//", "/\\")) or any(c in path for c in "\r\n\\") or len(path) > 2000:
        return "/"
    return path
