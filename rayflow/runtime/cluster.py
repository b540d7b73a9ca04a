"""Starting or joining Ray, in bounded time.

- Ray already initialised in this process: use it as it is.
- No address (argument or ``RAY_ADDRESS``): start a local Ray, no cluster needed.
- An address (``host:port``, ``ray://host:port``, ``auto``): join it.  Ray
  itself may retry an unreachable address for minutes, so a TCP probe fails
  fast on a closed port and the join as a whole is cut off after
  ``connect_timeout`` seconds with an error that names the address.
- A cluster with Ray's token authentication on: Ray answers a missing or wrong
  token by retrying for ~20 s and then "Failed to connect".  One quick request
  to the GCS first (as ``ray status`` makes) tells that case apart, and the
  ClusterAuthenticationError says how to give the token.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import ray

from rayflow.exceptions import ClusterAuthenticationError, ClusterConnectionError

CONNECT_TIMEOUT = float(os.environ.get("RAYFLOW_CONNECT_TIMEOUT", "30"))
AUTH_PROBE_SECONDS = 5.0
TOKEN_AUTH_DOCS = "https://docs.ray.io/en/latest/ray-security/token-auth.html"


def connect(address: str | None = None, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
    """Make sure this process is connected to Ray."""
    if ray.is_initialized():
        return
    # ray.init makes SIGTERM exit at once; `rayflow run` takes it like Ctrl-C (cancel, then exit).
    on_sigterm = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is None:
            ray.init(include_dashboard=False, logging_level="warning", configure_logging=True)
            return
        _probe(address, timeout=min(5.0, connect_timeout))
        _check_token(address, timeout=min(AUTH_PROBE_SECONDS, connect_timeout))
        _init_bounded(address, connect_timeout)
    finally:
        if getattr(on_sigterm, "keep_over_ray", False):
            signal.signal(signal.SIGTERM, on_sigterm)


def _host_port(address: str) -> tuple[str, int] | None:
    if address in ("auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.hostname is None:
        raise ClusterConnectionError(f"cannot parse Ray address {address!r}; use host:port or ray://host:port", address=address)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise ClusterConnectionError(f"Ray address {address!r} has no valid port", address=address)
    return parts.hostname, port


def _probe(address: str, timeout: float) -> None:
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterConnectionError(
            f"cannot reach the Ray cluster at {address!r}: {exc}", address=address
        ) from None


def _not_main_thread_note(record: logging.LogRecord) -> bool:
    """Ray notes that a join from another thread sets no SIGTERM handler: rayflow joins from a
    thread on purpose (to bound the join) and handles signals itself, so the note is noise."""
    return not str(record.msg).startswith("SIGTERM handler is not set")


def _init_bounded(address: str, timeout: float) -> None:
    outcome: dict[str, BaseException | None] = {}
    worker_log = logging.getLogger("ray._private.worker")
    if _not_main_thread_note not in worker_log.filters:
        worker_log.addFilter(_not_main_thread_note)

    def join() -> None:
        try:
            ray.init(address=address, logging_level="warning")
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - reported below, in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=join, name="rayflow-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ClusterConnectionError(
            f"timed out after {timeout:.0f}s joining the Ray cluster at {address!r} "
            "(is a Ray head listening there?)",
            address=address,
        )
    error = outcome.get("error")
    if isinstance(error, ray.exceptions.AuthenticationError):
        raise ClusterAuthenticationError(token_message(address), address=address) from None
    if error is not None:
        raise ClusterConnectionError(
            f"cannot join the Ray cluster at {address!r}: {type(error).__name__}: {error}", address=address
        ) from error


def _check_token(address: str, timeout: float) -> None:
    """Ask the GCS at ``address`` for its cluster id, as ray.init would first: a token it
    wants and does not get is an AuthenticationError at once.  Anything else (a ray://
    address, a port that is no GCS) is left to ray.init to report."""
    if address.startswith("ray://") or _host_port(address) is None:
        return
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
    sources = "RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token"
    if os.environ.get("RAY_AUTH_TOKEN"):
        found = "RAY_AUTH_TOKEN"
    elif os.environ.get("RAY_AUTH_TOKEN_PATH"):
        found = f"RAY_AUTH_TOKEN_PATH ({os.environ['RAY_AUTH_TOKEN_PATH']})"
    elif os.path.exists(os.path.expanduser("~/.ray/auth_token")):
        found = os.path.expanduser("~/.ray/auth_token")
    else:
        found = None
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
