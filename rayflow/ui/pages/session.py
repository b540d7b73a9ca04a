"""The login page and the sign-out, when the UI has a token (``security.Sessions``)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from rayflow.ui.context import UI, local_path
from rayflow.ui.security import LOGIN_PATH

logger = logging.getLogger("rayflow.ui")


def login_page(ui: UI, request: Request, status: int = 200, next_path: str = "/", message: str | None = None) -> Response:
    return ui.page(request, "login.html", status, next_path=local_path(next_path), message=message)


def routes(ui: UI) -> list[Route]:
    sessions = ui.sessions

    async def login(request: Request) -> Response:
        if sessions is None:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return login_page(ui, request, next_path=request.query_params.get("next") or "/")
        if (no := await ui.refused_post(request)) is not None:
            return no
        form = await request.form()
        given, next_path = form.get("token"), local_path(str(form.get("next") or "/"))
        if not isinstance(given, str) or not sessions.matches(given):
            logger.warning("rayflow ui: a wrong token at the login page from %s (401)", request.client.host if request.client else "?")
            return login_page(ui, request, 401, next_path=next_path, message="That is not this UI's token.")
        response = RedirectResponse(next_path, status_code=303)
        response.headers.append("set-cookie", sessions.login_cookie(request))
        return response

    async def logout(request: Request) -> Response:
        if (no := await ui.refused_post(request)) is not None:
            return no
        response = RedirectResponse(LOGIN_PATH if sessions is not None else "/", status_code=303)
        if sessions is not None:
            response.headers.append("set-cookie", sessions.logout_cookie(request))
        return response

    return [Route(LOGIN_PATH, login, methods=["GET", "POST"]), Route("/logout", logout, methods=["POST"])]
