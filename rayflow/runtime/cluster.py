"""Starting or joining Ray, in bounded time.

- Ray already initialised in this process: use it as it is.
- No address (argument or ``RAY_ADDRESS``): start a local Ray, no cluster needed,
  without its dashboard, and with Ray's token authentication as Ray sets it (on
  by default for a local Ray from Ray 2.59); rayflow never turns it off.
- An address (``host:port``, ``ray://host:port``, ``auto``): join it.  Ray
  itself may retry an unreachable address for minutes, so a TCP probe fails
  fast on a closed port and the join as a whole is cut off after
  ``connect_timeout`` seconds with an error that names the address.

Ray's own servers listen on every interface of the node, so a cluster that
runs without token authentication, joined or started here, and reachable at an
address other than loopback, is a warning (once per process) that points at
Ray's guide: anyone who can reach such a cluster can run code on it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from urllib.parse import urlsplit

import ray

from rayflow.exceptions import ClusterConnectionError

CONNECT_TIMEOUT = float(os.environ.get("RAYFLOW_CONNECT_TIMEOUT", "30"))
TOKEN_AUTH_DOCS = "https://docs.ray.io/en/latest/ray-security/token-auth.html"

logger = logging.getLogger(__name__)
_warned_unauthenticated = False


def connect(address: str | None = None, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
    """Make sure this process is connected to Ray."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        ray.init(include_dashboard=False, logging_level="warning", configure_logging=True)  # no dashboard to expose
        warn_if_unauthenticated(_gcs_address() or "auto")
        return
    _probe(address, timeout=min(5.0, connect_timeout))
    _init_bounded(address, connect_timeout)
    warn_if_unauthenticated(address)


def warn_if_unauthenticated(address: str) -> bool:
    """Warn (once per process) when the cluster at ``address`` is beyond loopback and this driver
    talks to it without Ray's token authentication.  True when it warned."""
    global _warned_unauthenticated
    if _warned_unauthenticated or token_auth_enabled() or _on_loopback(address):
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


def _on_loopback(address: str) -> bool:
    """Whether the cluster's address is this machine's loopback (127.0.0.0/8, ::1, localhost)."""
    host = None
    try:
        target = _host_port(address)
        host = target[0] if target is not None else None
    except ClusterConnectionError:
        return False
    if host is None:  # "auto": the cluster found on this machine, at the address Ray recorded
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


class _NoThreadSigtermNote(logging.Filter):
    """Ray notes that it sets no SIGTERM handler when ``ray.init`` runs outside the main thread,
    as the bounded join below does on purpose: a line of noise in every command that joins."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SIGTERM handler is not set")


def _init_bounded(address: str, timeout: float) -> None:
    outcome: dict[str, BaseException | None] = {}
    ray_worker_log = logging.getLogger("ray._private.worker")
    if not any(isinstance(f, _NoThreadSigtermNote) for f in ray_worker_log.filters):
        ray_worker_log.addFilter(_NoThreadSigtermNote())

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
    if error is not None:
        raise ClusterConnectionError(
            f"cannot join the Ray cluster at {address!r}: {type(error).__name__}: {error}", address=address
        ) from error
