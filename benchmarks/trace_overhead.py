"""Cost of tracing on a large map: the same flow with tracing off and on, same Ray session.

    python benchmarks/trace_overhead.py [--n 1000000] [--repeat 3]

Tracing on exports to an OTLP/HTTP receiver started on loopback by this
script (it decodes nothing, it only answers).  Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import statistics
import threading
import time

import ray

import rayflow as rf


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def affine(x: int) -> int:
    return 2 * x + 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10**6)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
    data = list(range(args.n))
    t_affine, t_total = rf.task(affine), rf.task(lambda xs: sum(xs)).with_options(name="total")

    @rf.flow
    def mapped():
        return t_total(t_affine.map(data))

    def timed() -> float:
        start = time.perf_counter()
        mapped()
        return time.perf_counter() - start

    results: dict[str, list[float]] = {}
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    for label in ("off", "on", "off", "on"):  # interleaved, so drift hits both alike
        if label == "on":
            os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        else:
            os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        mapped()  # warm
        results.setdefault(label, []).extend(timed() for _ in range(args.repeat))
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    print(f"{'tracing':<8} {'median s':>9}   N={args.n}")
    print(f"{'off':<8} {off:>9.3f}\n{'on':<8} {on:>9.3f}\nratio on/off: {on / off:.3f}")
    print(json.dumps({"n": args.n, "off_s": round(off, 4), "on_s": round(on, 4), "ratio": round(on / off, 3)}))
    ray.shutdown()


if __name__ == "__main__":
    main()
