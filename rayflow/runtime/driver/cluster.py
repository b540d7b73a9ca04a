"""Starting or joining Ray, in bounded time.

- Ray already initialised in this process: use it as it is.
- No address (argument or ``RAY_ADDRESS``): start a local Ray, no cluster needed,
  without its dashboard, and with Ray's token authentication as Ray sets it (on
  by default for a local Ray from Ray 2.59); rayflow never turns it off.
- An address (``host:port``, ``ray://host:port``, ``auto``): join it.  Ray
  itself may retry an unreachable address for minutes, so a TCP probe fails
  fast on a closed port and the join as a whole is cut off after
  ``connect_timeout`` seconds with an error that names the address.
- Ray's token authentication (``runtime.driver.auth``): a token the cluster wants and
  does not get is named before the join; a cluster beyond loopback without it
  is a warning.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from urllib.parse import urlsplit

import ray

from rayflow.exceptions import ClusterAuthenticationError, ClusterConnectionError
from rayflow.runtime.driver.auth import AUTH_PROBE_SECONDS, check_token, token_message, warn_if_unauthenticated
from rayflow.states import error_text

CONNECT_TIMEOUT = float(os.environ.get("RAYFLOW_CONNECT_TIMEOUT", "30"))


def connect(address: str | None = None, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
    """Make sure this process is connected to Ray."""
    if ray.is_initialized():
        return
    # ray.init makes SIGTERM exit at once; `rayflow run` takes it like Ctrl-C (cancel, then exit).
    on_sigterm = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is None:
            ray.init(include_dashboard=False, logging_level="warning", configure_logging=True)  # no dashboard to expose
            warn_if_unauthenticated("auto", None)
            return
        target = _probe(address, timeout=min(5.0, connect_timeout))
        if target is not None and not address.startswith("ray://"):
            check_token(address, timeout=min(AUTH_PROBE_SECONDS, connect_timeout))
        _init_bounded(address, connect_timeout)
        warn_if_unauthenticated(address, target[0] if target is not None else None)
    finally:
        if getattr(on_sigterm, "keep_over_ray", False):
            signal.signal(signal.SIGTERM, on_sigterm)


def connect_existing(address: str | None = None, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
    """Join a cluster that is already running (never start one): ``address``, else
    RAY_ADDRESS, else the local cluster (``auto``).  For cancel, show, and the limits."""
    connect(address or os.environ.get("RAY_ADDRESS") or "auto", connect_timeout=connect_timeout)


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


def _probe(address: str, timeout: float) -> tuple[str, int] | None:
    """The address's (host, port), once a TCP connection to it succeeded; None for "auto"."""
    target = _host_port(address)
    if target is None:
        return None
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterConnectionError(
            f"cannot reach the Ray cluster at {address!r}: {exc}", address=address
        ) from None
    return target


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
            f"cannot join the Ray cluster at {address!r}: {error_text(type(error).__name__, str(error))}", address=address
        ) from error
