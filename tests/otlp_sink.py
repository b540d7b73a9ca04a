"""A real OTLP trace receiver on loopback, for end-to-end tests (HTTP/protobuf and gRPC).

Spans are decoded from ``ExportTraceServiceRequest`` with opentelemetry-proto
and kept as plain dicts; ``raw`` keeps every request body, to search for
values that must never be exported.
"""

from __future__ import annotations

import http.server
import threading
import time
from concurrent import futures
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def decode(request: trace_service_pb2.ExportTraceServiceRequest) -> list[dict]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                spans.append(
                    {
                        "name": s.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_id": s.parent_span_id.hex(),
                        "start": s.start_time_unix_nano / 1e9,
                        "end": s.end_time_unix_nano / 1e9,
                        "attributes": {a.key: _value(a.value) for a in s.attributes},
                        "events": [(e.name, {a.key: _value(a.value) for a in e.attributes}) for e in s.events],
                        "links": [(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                        "status": s.status.code,
                        "resource": resource,
                    }
                )
    return spans


class Sink:
    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()

    def add(self, body: bytes) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self._lock:
            self.raw.append(body)
            self.spans.extend(decode(request))

    def wait_for(self, predicate, timeout: float = 20.0) -> list[dict]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            time.sleep(0.1)
        with self._lock:
            return list(self.spans)


class HttpSink(Sink):
    def __init__(self) -> None:
        super().__init__()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/traces":
                    sink.add(body)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        # shutdown() waits for the loop to poll: 0.05 s, not serve_forever's 0.5 s, at every close
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GrpcSink(Sink):
    def __init__(self) -> None:
        super().__init__()
        import grpc

        sink = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802
                sink.add(request.SerializeToString())
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.server.stop(0)
