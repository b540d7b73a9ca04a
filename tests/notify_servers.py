"""Real endpoints on 127.0.0.1 for the notifiers' tests: an HTTP server that records each POST
(with the time it arrived) or hangs on /hang, a dead port, and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.release = threading.Event()  # /hang answers once set (at the server's end)
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def bodies(self, path: str) -> list[dict]:
        return [r["body"] for r in self.received if r["path"] == path]


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        arrived = time.time()
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server: Recorder = self.server  # type: ignore[assignment]
        if self.path.startswith("/hang"):
            server.received.append({"path": self.path, "body": None, "at": arrived, "raw": raw})
            server.release.wait(60)
            return
        server.received.append({"path": self.path, "body": json.loads(raw), "at": arrived, "raw": raw,
                                "headers": dict(self.headers)})
        self.send_response(500 if self.path.startswith("/fail") else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def http_server() -> Recorder:
    server = Recorder()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def dead_port() -> int:
    """A port nothing listens on (bound, then closed): a connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[float, str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook)
        self.messages.append((time.time(), envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def smtp_server():
    """(controller, mailbox): a started aiosmtpd server on 127.0.0.1 (controller.port)."""
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=dead_port())
    controller.start()
    return controller, mailbox
