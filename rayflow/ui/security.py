"""Who may use the UI, and from which page: the host check, the token, CSRF, and the headers.

- **Host**: Starlette's ``TrustedHostMiddleware`` answers 400 to a ``Host`` not on the
  allow-list (loopback names, the address served, ``--allowed-host``).  A site whose name
  re-resolves to 127.0.0.1 (DNS rebinding) sends its own name as ``Host``: refused.
- **Token** (``RAYFLOW_UI_TOKEN`` or ``--token-file``; required off loopback): ``TokenGate``
  lets a request through with ``Authorization: Bearer TOKEN`` or with the session cookie the
  login page sets (HttpOnly, SameSite=Lax, signed with a key derived from the token, expiring
  after ``SESSION_SECONDS``); anything else is 401.  Only ``/login`` and the vendored htmx
  under ``/static`` are public.  Tokens are compared in constant time, never logged or echoed.
- **CSRF**: a POST made with the cookie (a browser) must carry the ``csrf_token`` of a page
  of this UI: an HMAC, under a key of this process, of a random nonce kept in a cookie of its
  own; a page on another site can neither read it nor compute it.  A POST with a Bearer token
  comes from a script, which a browser never sends for another site.
- **Headers** on every response (``SecurityHeaders``): no framing, no MIME sniffing, a CSP
  that allows only this UI's own script, no referrer to other sites, no caching of pages.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import pathlib
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("rayflow.ui")

TOKEN_ENV = "RAYFLOW_UI_TOKEN"
MIN_TOKEN_CHARS = 16
SESSION_SECONDS = 7 * 86400
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
PUBLIC_PREFIXES = ("/static/",)  # the vendored htmx and its licence: nothing of the history
LOGIN_PATH = "/login"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make browsers send `Origin: null` with forms
)


class SetupError(ValueError):
    """A UI that must not start as asked (no token off loopback, a bad token file): one line."""


# -- start-up ----------------------------------------------------------------------------------


def on_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the UI on this machine."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def read_token(token_file: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The UI's token: the file's one line, else ``RAYFLOW_UI_TOKEN``, else None.  A file that
    cannot be read, or an empty, short or multi-line token, is a SetupError that never shows it."""
    environ = os.environ if environ is None else environ
    if token_file is not None:
        try:
            text = pathlib.Path(token_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise SetupError(f"cannot read the UI token file {token_file}: {getattr(exc, 'strerror', None) or exc}") from None
        where = f"the UI token file {token_file}"
    elif TOKEN_ENV in environ:
        text, where = environ[TOKEN_ENV], TOKEN_ENV
    else:
        return None
    token = text.strip()
    if not token:
        raise SetupError(f"{where} is empty: put a token of at least {MIN_TOKEN_CHARS} characters in it")
    if any(not ("!" <= c <= "~") for c in token):
        raise SetupError(f"{where} must hold one token of printable ASCII characters, no spaces or line breaks")
    if len(token) < MIN_TOKEN_CHARS:
        raise SetupError(
            f"the token in {where} is too short ({len(token)} characters): use at least {MIN_TOKEN_CHARS}, e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


def check_exposure(host: str, token: str | None, option: str, token_option: str = "--token-file") -> None:
    """A UI reachable beyond this machine must have a token."""
    if token is None and not on_loopback(host):
        raise SetupError(
            f"{option} {host} makes the UI reachable from other machines: give it a token "
            f"({TOKEN_ENV}=... or {token_option} FILE), or listen on 127.0.0.1"
        )


def allowed_hosts(host: str, extra: Sequence[str] = ()) -> list[str]:
    """The ``Host`` names the UI answers: loopback, the address it listens on, and ``extra``."""
    served = [] if host in ("0.0.0.0", "::", "") else [f"[{host}]" if ":" in host and not host.startswith("[") else host]
    out: list[str] = []
    for name in (*LOOPBACK_NAMES, *served, *extra):
        name = name.strip().lower()
        if name and name not in out:
            out.append(name)
    return out


def check_allowed_host(pattern: str) -> None:
    """``--allowed-host`` takes a name, an address or ``*.domain`` (no port)."""
    body = pattern[2:] if pattern.startswith("*.") else pattern
    if not body or "*" in body or "/" in body or " " in body or (":" in body and not body.startswith("[")):
        raise SetupError(f"--allowed-host {pattern!r} must be a host name or address (no port), or *.domain")
    if pattern.startswith("*.") and len([label for label in body.split(".") if label]) < 2:
        raise SetupError(
            f"--allowed-host {pattern!r} would let in every site under .{body.strip('.')}: "
            "a wildcard needs a domain of your own, e.g. *.example.com"
        )


# -- requests ---------------------------------------------------------------------------------


def _cookie_name(scope: Scope, kind: str) -> str:
    """Cookies are not kept apart by port: two UIs on one host get names of their own."""
    server = scope.get("server") or ("", 0)
    return f"rayflow_{kind}_{server[1]}"


def _cookie(name: str, value: str, request: Request, max_age: int, same_site: str = "lax") -> str:
    secure = "; Secure" if request.url.scheme == "https" else ""
    return f"{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={same_site.capitalize()}{secure}"


class Sessions:
    """The login token's checks and the session cookie, signed with a key derived from it."""

    def __init__(self, token: str):
        self._token = token.encode()
        self._key = hmac.new(self._token, b"rayflow-ui-session", hashlib.sha256).digest()
        self._lock = threading.Lock()
        self._signed_out: dict[str, float] = {}  # session id -> when it was issued

    def matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), self._token)

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def cookie_value(self) -> str:
        """``issued.session-id.signature``: the session id lets sign-out end this session alone."""
        body = f"{int(time.time())}.{secrets.token_hex(8)}"
        return f"{body}.{self._sign(body)}"

    def valid(self, value: str | None) -> bool:
        issued, session, sig = ((value or "").split(".") + ["", "", ""])[:3]
        if not issued.isdigit() or not hmac.compare_digest(sig.encode(), self._sign(f"{issued}.{session}").encode()):
            return False
        with self._lock:
            if session in self._signed_out:
                return False
        return 0 <= time.time() - int(issued) <= SESSION_SECONDS

    def login_cookie(self, request: Request) -> str:
        return _cookie(_cookie_name(request.scope, "session"), self.cookie_value(), request, SESSION_SECONDS)

    def logout_cookie(self, request: Request) -> str:
        """The cookie that clears the session, which ends here too: a copy of its cookie kept
        elsewhere no longer signs in (until this UI restarts, for at most SESSION_SECONDS)."""
        value = request.cookies.get(_cookie_name(request.scope, "session"))
        if self.valid(value):
            issued, session, _ = value.split(".")
            now = time.time()
            with self._lock:
                self._signed_out = {k: t for k, t in self._signed_out.items() if now - t <= SESSION_SECONDS}
                self._signed_out[session] = float(issued)
        return _cookie(_cookie_name(request.scope, "session"), "", request, 0)

    def bearer(self, headers: Headers) -> str | None:
        """The token an ``Authorization: Bearer`` header gives; "" for another kind of header."""
        value = headers.get("authorization")
        if value is None:
            return None
        scheme, _, given = value.partition(" ")
        return given.strip() if scheme.lower() == "bearer" else ""

    def authenticated(self, scope: Scope) -> str | None:
        """"bearer" or "cookie" for a request that has the token, else None."""
        headers = Headers(scope=scope)
        given = self.bearer(headers)
        if given is not None:
            return "bearer" if self.matches(given) else None
        request = Request(scope)
        return "cookie" if self.valid(request.cookies.get(_cookie_name(scope, "session"))) else None


class TokenGate:
    """Every request but the login page and the vendored htmx needs the token (ASGI middleware)."""

    def __init__(self, app: ASGIApp, sessions: Sessions, login_page: Any):
        self.app, self.sessions, self.login_page = app, sessions, login_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == LOGIN_PATH or scope["path"].startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        how = self.sessions.authenticated(scope)
        if how is not None:
            scope.setdefault("state", {})["auth"] = how
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.sessions.bearer(request.headers):
            logger.warning("rayflow ui: a wrong token from %s (401)", request.client.host if request.client else "?")
        await self._refuse(request)(scope, receive, send)

    def _refuse(self, request: Request) -> Response:
        challenge = {"WWW-Authenticate": 'Bearer realm="rayflow"'}
        if request.method == "GET" and not request.url.path.startswith("/api/") and not request.headers.get("HX-Request"):
            return self.login_page(request, 401, next_path=request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return JSONResponse({"error": "this UI needs its token: Authorization: Bearer TOKEN, or sign in at /login"}, 401, challenge)


class Csrf:
    """Tokens binding a form to a page of this UI: HMAC(process key, the browser's nonce cookie)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def _for(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()

    def _nonce(self, request: Request) -> str | None:
        nonce = request.cookies.get(_cookie_name(request.scope, "csrf"))
        return nonce if nonce and len(nonce) == 32 and nonce.isalnum() else None

    def token(self, request: Request) -> tuple[str, str | None]:
        """The form token for this request's page, and the cookie to set when it has no nonce."""
        nonce = self._nonce(request)
        if nonce is not None:
            return self._for(nonce), None
        nonce = secrets.token_hex(16)
        return self._for(nonce), _cookie(_cookie_name(request.scope, "csrf"), nonce, request, SESSION_SECONDS, "strict")

    def valid(self, request: Request, given: str | None) -> bool:
        nonce = self._nonce(request)
        return nonce is not None and given is not None and hmac.compare_digest(given.encode(), self._for(nonce).encode())


class SecurityHeaders:
    """The headers every response carries (pages, errors, the 400 of the host check, static files)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(PUBLIC_PREFIXES)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", []) if h[0].lower() not in dict(HEADERS)]
                headers.extend(HEADERS)
                if not static and not any(h[0].lower() == b"cache-control" for h in headers):  # an image's own stays
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if started:
                raise
            # Starlette's own 500 would come from outside this middleware, without the headers.
            logger.exception("rayflow ui: %s %s failed", scope.get("method"), scope["path"])
            await PlainTextResponse("internal error: see the UI's log", status_code=500)(scope, receive, send_with_headers)
