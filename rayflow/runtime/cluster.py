"""Starting or joining Ray, in bounded time.

- Ray already initialised in this process: use it as it is.
- No address (argument or ``RAY_ADDRESS``): start a local Ray, no cluster needed.
- An address (``host:port``, ``ray://host:port``, ``auto``): join it.  Ray
  itself may retry an unreachable address for minutes, so a TCP probe fails
  fast on a closed port and the join as a whole is cut off after
  ``connect_timeout`` seconds with an error that names the address.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from urllib.parse import urlsplit

import ray

from rayflow.exceptions import ClusterConnectionError

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
            ray.init(include_dashboard=False, logging_level="warning", configure_logging=True)
            return
        _probe(address, timeout=min(5.0, connect_timeout))
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


def _init_bounded(address: str, timeout: float) -> None:
    outcome: dict[str, BaseException | None] = {}

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
