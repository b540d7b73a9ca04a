"""Ray's token authentication, as rayflow meets it: never turned off, asked for clearly.

- A cluster with token authentication on: Ray answers a missing or wrong token
  by retrying for ~20 s and then "Failed to connect".  One quick request to
  the GCS first (as ``ray status`` makes) tells that case apart, and the
  ClusterAuthenticationError says how to give the token.
- Ray's own servers listen on every interface of the node, so a cluster that
  runs without token authentication, joined or started here, and reachable at
  an address other than loopback, is a warning (once per process) that points
  at Ray's guide: anyone who can reach such a cluster can run code on it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import ray

from rayflow.exceptions import ClusterAuthenticationError
from rayflow.runtime.driver.jobs import TOKEN_SOURCES, token_source

AUTH_PROBE_SECONDS = 5.0
TOKEN_AUTH_DOCS = "https://docs.ray.io/en/latest/ray-security/token-auth.html"

logger = logging.getLogger(__name__)
_warned_unauthenticated = False


def check_token(address: str, timeout: float) -> None:
    """Ask the GCS at ``address`` for its cluster id, as ray.init would first: a token it
    wants and does not get is an AuthenticationError at once.  Anything else (a ray://
    address, a port that is no GCS) is left to ray.init to report."""
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "token" and not _has_token():
        # Ray's client would abort the whole process here; ray.init refuses it too.
        raise ClusterAuthenticationError(token_message(address), address=address)
    outcome: dict[str, BaseException | None] = {}

    def ask() -> None:
        try:
            ray._raylet.GcsClient(address=address)
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - looked at below
            outcome["error"] = exc

    thread = threading.Thread(target=ask, name="rayflow-auth-probe", daemon=True)
    with _held_stderr() as held:  # Ray's C++ client logs the refusal there too: one message is enough
        thread.start()
        thread.join(timeout)
        refused = isinstance(outcome.get("error"), ray.exceptions.AuthenticationError)
        held.discard = refused
    if refused:
        raise ClusterAuthenticationError(token_message(address), address=address)


def _has_token() -> bool:
    try:
        return bool(ray._raylet.AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True))
    except Exception:  # noqa: BLE001 - cannot tell: let the probe and ray.init decide
        return True


def token_message(address: str) -> str:
    """What to do about a cluster that wants a Ray auth token, given what this process has."""
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    sources = TOKEN_SOURCES
    found = token_source()
    where = f"the Ray cluster at {address!r} requires token authentication"
    if mode != "token":
        note = f"; a token is in {found}, but Ray sends it only when RAY_AUTH_MODE=token" if found else ""
        return (
            f"{where} and this process sent no token: set RAY_AUTH_MODE=token and give the cluster's token "
            f"in {sources}{note} (see {TOKEN_AUTH_DOCS})"
        )
    if found is None:
        return f"{where} and no token was found: give the cluster's token in {sources} (see {TOKEN_AUTH_DOCS})"
    return (
        f"{where} and rejected the token from {found}: use the token the cluster was started with "
        f"(`ray get-auth-token` on its head node) (see {TOKEN_AUTH_DOCS})"
    )


@dataclass
class _Held:
    discard: bool = False  # drop what was held instead of writing it out after


@contextlib.contextmanager
def _held_stderr() -> Iterator[_Held]:
    """Hold what is written to file descriptor 2 meanwhile; write it out after unless discarded."""
    held = _Held()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr to hold
        yield held
        return
    with tempfile.TemporaryFile() as buffer:
        os.dup2(buffer.fileno(), 2)
        try:
            yield held
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            text = buffer.read()
            if text and not held.discard:
                os.write(2, text)


def warn_if_unauthenticated(address: str, host: str | None) -> bool:
    """Warn (once per process) when the cluster at ``address`` (on ``host``; None: the one this
    process started or found, at the address Ray recorded) is beyond loopback and this driver
    talks to it without Ray's token authentication.  True when it warned."""
    global _warned_unauthenticated
    if _warned_unauthenticated or token_auth_enabled() or _on_loopback(host):
        return False
    _warned_unauthenticated = True
    logger.warning(
        "rayflow: the Ray cluster at %s runs without token authentication: anyone who can reach it "
        "can run code on it. Enable Ray's token authentication (RAY_AUTH_MODE=token on every node and "
        "driver, with the cluster's token): %s", address, TOKEN_AUTH_DOCS,
    )
    return True


def _gcs_address() -> str | None:
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - a Ray client connection has none
        return None


def token_auth_enabled() -> bool:
    """Whether this process uses Ray's token authentication (Ray 2.52+; older Rays have none)."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:
        return False
    try:
        return bool(is_token_auth_enabled())
    except Exception:  # noqa: BLE001 - a Ray that cannot say: do not cry wolf
        return True


def _on_loopback(host: str | None) -> bool:
    """Whether the cluster's host is this machine's loopback (127.0.0.0/8, ::1, localhost)."""
    if host is None:  # the cluster started or found here, at the address Ray recorded
        gcs = _gcs_address()
        if gcs is None:
            return False
        host = gcs.rsplit(":", 1)[0]
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        pass
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False
