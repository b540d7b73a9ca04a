"""Serving the UI with uvicorn: in the foreground (``rayflow ui``) or beside a serve loop."""

from __future__ import annotations

import pathlib
import socket
import threading
from collections.abc import Sequence
from typing import Any

import uvicorn

from rayflow.ui.app import create_app


def check_port(host: str, port: int) -> None:
    """An OSError when ``host:port`` cannot be listened on (in use, not an address here)."""
    with socket.create_server((host, port)):
        pass


def _config(app: Any, host: str, port: int) -> uvicorn.Config:
    # No access log: a URL is all it would add, and nothing of a request's headers or body.
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)


def serve(
    home: str | pathlib.Path, host: str, port: int, *, token: str | None = None, allowed_hosts: Sequence[str] = (),
) -> None:
    """The read-only UI, until interrupted."""
    app = create_app(home, token=token, host=host, allowed_hosts=allowed_hosts)
    uvicorn.Server(_config(app, host, port)).run()


def serve_in_background(
    home: str | pathlib.Path, host: str, port: int, actions: Any, *, token: str | None = None,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """The UI with ``actions``, in a daemon thread (off the main thread, it takes no signals)."""
    app = create_app(home, actions, token=token, host=host, allowed_hosts=allowed_hosts)
    server = uvicorn.Server(_config(app, host, port))
    threading.Thread(target=server.run, name="rayflow-ui", daemon=True).start()
