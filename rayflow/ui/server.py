"""Serving the UI with uvicorn: in the foreground (``rayflow ui``) or beside a serve loop."""

from __future__ import annotations

import pathlib
import socket
import threading
from typing import Any

import uvicorn

from rayflow.ui.app import create_app


def check_port(host: str, port: int) -> None:
    """An OSError when ``host:port`` cannot be listened on (in use, not an address here)."""
    with socket.create_server((host, port)):
        pass


def serve(home: str | pathlib.Path, host: str, port: int) -> None:
    """The read-only UI, until interrupted."""
    uvicorn.run(create_app(home), host=host, port=port, log_level="warning")


def serve_in_background(home: str | pathlib.Path, host: str, port: int, actions: Any) -> None:
    """The UI with ``actions``, in a daemon thread (off the main thread, it takes no signals)."""
    server = uvicorn.Server(uvicorn.Config(create_app(home, actions), host=host, port=port, log_level="warning"))
    threading.Thread(target=server.run, name="rayflow-ui", daemon=True).start()
