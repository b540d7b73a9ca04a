"""The notifiers: ``webhook``, ``slack`` and ``email``, state handlers for tasks and flows.

Each checks its arguments where it is made (a bad URL, no recipients: a DefinitionError), is a
plain picklable object (it travels with the flow to the run's actor), and when called as a state
handler queues a delivery (``sender``) and returns None: it never changes a state, never raises,
never waits.  ``states=``: the states it notifies of (names or StateType); None: every finished
state it is called for (``on_failure=``: the failures)."""

from __future__ import annotations

import json
import logging
import os
import smtplib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from rayflow.exceptions import DefinitionError
from rayflow.notify import message, sender
from rayflow.notify.context import current
from rayflow.states import StateType

logger = logging.getLogger("rayflow.notify")
TIMEOUT = 5.0  # seconds per attempt
RETRIES = 2


def _states(owner: str, states: Iterable[Any] | None) -> frozenset[StateType] | None:
    if states is None:
        return None
    if isinstance(states, (str, StateType)):
        states = [states]
    out = set()
    for s in states:
        try:
            out.add(s if isinstance(s, StateType) else StateType(str(s).upper()))
        except ValueError:
            names = ", ".join(t.value for t in StateType)
            raise DefinitionError(f"{owner}: unknown state {s!r} in states= (one of {names})") from None
    if not out:
        raise DefinitionError(f"{owner}: states= is empty (None: every finished state)")
    return frozenset(out)


def _limits(owner: str, timeout: float, retries: int) -> None:
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise DefinitionError(f"{owner}: timeout must be a number of seconds > 0, got {timeout!r}")
    if not (isinstance(retries, int) and 0 <= retries <= 10):
        raise DefinitionError(f"{owner}: retries must be an integer from 0 to 10, got {retries!r}")


def _http_url(owner: str, url: Any) -> str:
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = f"scheme {parts.scheme!r}" if parts is not None and parts.scheme else repr(url)[:60]
        raise DefinitionError(f"{owner}: the URL must be http:// or https:// with a host, got {shown}")
    return url


def _where(url: str) -> str:
    """A URL as logs name it: scheme and host only (a Slack URL's path is its secret)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class Notifier:
    """A state handler that sends a message about the new state, in the background."""

    kind = "notifier"

    def __init__(self, states: Iterable[Any] | None, timeout: float, retries: int, ui_url: str | None):
        _limits(f"rf.notify.{self.kind}", timeout, retries)
        self.states = _states(f"rf.notify.{self.kind}", states)
        self.timeout = float(timeout)
        self.retries = retries
        self.ui_url = ui_url or os.environ.get("RAYFLOW_UI_URL") or None
        self.__name__ = self.__qualname__ = f"rf.notify.{self.kind}"

    def __call__(self, subject: Any, old: Any, new: Any) -> None:
        try:
            wanted = new.type in self.states if self.states is not None else new.is_finished()
            if not wanted:
                return None
            run = current()
            if run is None:  # called by hand, not by a run's orchestrator
                name = getattr(subject, "name", None) or type(subject).__name__
                ev = message.event(kind="state", flow=name, run_id=None, task=None, state=new.type.value,
                                   message=new.message, error=None)
                self.notify(ev)
                return None
            log = None
            if run.log is not None:
                log = lambda level, text, _log=run.log, _key=run.task_key: _log(level, text, _key)  # noqa: E731
            self.notify(message.state_event(run, new, self.ui_url), log=log)
        except Exception:  # noqa: BLE001  (a notifier never fails a run)
            logger.warning("rayflow: %s could not queue a notification", self.__name__, exc_info=True)
        return None

    def notify(self, ev: Mapping[str, Any], log: Any = None) -> None:
        """Queue a delivery of event ``ev`` (message.event); ``log(level, text)``: the run's logs."""
        ev = dict(ev)
        if ev.get("run_id") and not ev.get("url"):
            ev["url"] = message.ui_link(self.ui_url, ev["run_id"])
        sender.submit(sender.Delivery(
            send=lambda: self.send(ev), what=self.describe(), retries=self.retries, run_id=ev.get("run_id"),
            log=log, retryable=self.retryable,
        ))

    def send(self, ev: dict[str, Any]) -> None:  # pragma: no cover - every notifier has its own
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind

    def retryable(self, exc: BaseException) -> bool:
        return True


class Webhook(Notifier):
    kind = "webhook"

    def __init__(self, url: str, headers: Mapping[str, str] | None = None, *, states: Iterable[Any] | None = None,
                 timeout: float = TIMEOUT, retries: int = RETRIES, ui_url: str | None = None):
        self.url = _http_url(f"rf.notify.{self.kind}", url)
        if headers is not None and not (isinstance(headers, Mapping)
                                        and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())):
            raise DefinitionError(f"rf.notify.{self.kind}: headers must map names to strings")
        self.headers = dict(headers or {})
        super().__init__(states, timeout, retries, ui_url)

    def body(self, ev: dict[str, Any]) -> dict[str, Any]:
        return ev

    def send(self, ev: dict[str, Any]) -> None:
        data = json.dumps(self.body(ev)).encode()
        request = urllib.request.Request(
            self.url, data=data, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "rayflow", **self.headers},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (http(s) checked)
            response.read(65536)

    def describe(self) -> str:
        return f"{self.kind} to {_where(self.url)}"

    def retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, urllib.error.HTTPError):
            return exc.code >= 500 or exc.code == 429
        return True

    def __repr__(self) -> str:
        return f"rf.notify.{self.kind}({_where(self.url)!r})"


class Slack(Webhook):
    kind = "slack"

    def __init__(self, webhook_url: str, *, states: Iterable[Any] | None = None, timeout: float = TIMEOUT,
                 retries: int = RETRIES, ui_url: str | None = None):
        super().__init__(webhook_url, states=states, timeout=timeout, retries=retries, ui_url=ui_url)

    def body(self, ev: dict[str, Any]) -> dict[str, Any]:
        return message.slack(ev)


class Email(Notifier):
    kind = "email"

    def __init__(self, to: str | Iterable[str], *, smtp_host: str = "localhost", smtp_port: int = 25,
                 sender: str = "rayflow@localhost", username: str | None = None, password: Any = None,
                 starttls: bool = False, ssl: bool = False, states: Iterable[Any] | None = None,
                 timeout: float = TIMEOUT, retries: int = RETRIES, ui_url: str | None = None):
        owner = "rf.notify.email"
        recipients = (to,) if isinstance(to, str) else tuple(to) if to is not None else ()
        bad = [r for r in recipients if not (isinstance(r, str) and "@" in r.strip("@"))]
        if not recipients or bad:
            raise DefinitionError(f"{owner}: to= needs at least one address like name@host, got {bad or 'none'}")
        if not (isinstance(smtp_host, str) and smtp_host.strip()):
            raise DefinitionError(f"{owner}: smtp_host must be a host name, got {smtp_host!r}")
        if not (isinstance(smtp_port, int) and 0 < smtp_port < 65536):
            raise DefinitionError(f"{owner}: smtp_port must be a port from 1 to 65535, got {smtp_port!r}")
        if not (isinstance(sender, str) and "@" in sender):
            raise DefinitionError(f"{owner}: sender must be an address like name@host, got {sender!r}")
        self.to, self.smtp_host, self.smtp_port, self.sender = recipients, smtp_host, smtp_port, sender
        self.username, self.starttls, self.ssl = username, starttls, ssl
        self._password = getattr(password, "get_secret_value", lambda: password)()  # a SecretStr or a str
        super().__init__(states, timeout, retries, ui_url)

    def send(self, ev: dict[str, Any]) -> None:
        smtp = smtplib.SMTP_SSL if self.ssl else smtplib.SMTP
        with smtp(self.smtp_host, self.smtp_port, timeout=self.timeout) as client:
            if self.starttls:
                client.starttls()
            if self.username:
                client.login(self.username, self._password or "")
            client.send_message(message.email(ev, self.sender, self.to))

    def describe(self) -> str:
        return f"email to {len(self.to)} recipient(s) via {self.smtp_host}:{self.smtp_port}"

    def retryable(self, exc: BaseException) -> bool:
        return not isinstance(exc, (smtplib.SMTPAuthenticationError, smtplib.SMTPRecipientsRefused))

    def __repr__(self) -> str:
        return f"rf.notify.email({list(self.to)!r}, smtp_host={self.smtp_host!r})"


webhook = Webhook
slack = Slack
email = Email
