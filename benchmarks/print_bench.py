"""What capturing ``print()`` costs (``log_prints=True``): a print-heavy map, and one print alone.

    python benchmarks/print_bench.py [--items 4000] [--chunk 100] [--lines 5] [--repeat 5]

1. A flow (in-process runner) whose map of ``--items`` items, ``--chunk`` per chunk, prints
   ``--lines`` lines per item (``--lines`` × ``--chunk`` stays under the 1,000 records a work
   keeps, so every line is recorded and stored), next to the same map without ``log_prints``:
   the run's wall time, min of ``--repeat`` runs, and the difference per printed line.
2. ``print()`` inside one work's capture (``engine.worker.logs.capture``), one thread, the
   records dropped past 1,000 as they would be: CPU time per print, min of ``--repeat``.

Run it on two trees (``PYTHONPATH=TREE python TREE/benchmarks/print_bench.py``) to compare
the print capture before and after a change.  Prints a table, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import rayflow as rf


@rf.task(log_prints=True)
def loud(x: int, lines: int) -> int:
    for k in range(lines):
        print("item", x, "line", k)
    return x


@rf.task
def silent(x: int, lines: int) -> int:
    for k in range(lines):
        str(("item", x, "line", k))  # the same work, nothing printed
    return x


@rf.flow(runner="local")
def printing(items: int, lines: int, chunk: int, capture: bool):
    task = loud if capture else silent
    return task.with_options(chunk_size=chunk).map(range(items), rf.unmapped(lines))


def run_time(items: int, lines: int, chunk: int, capture: bool, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run = printing.run(items=items, lines=lines, chunk=chunk, capture=capture)
        best = min(best, time.perf_counter() - started)
        assert run.state.is_successful(), run.state
    return best


def one_print(n: int, repeat: int) -> float:
    """CPU seconds per print() inside a capture (a chunk of one item: the shared cell's path)."""
    from rayflow.engine.worker.logs import capture

    best = float("inf")
    for _ in range(repeat):
        with capture("run", "task", None, 0, True) as context:
            context.item[0] = 0
            started = time.process_time()
            for k in range(n):
                print("item", 0, "line", k)
            best = min(best, time.process_time() - started)
        assert len(context.records) >= 1000  # the records past 1,000 are counted, not kept
    return best / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--lines", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ["RAYFLOW_HOME"] = tempfile.mkdtemp(prefix="print-bench-")
    printing.run(items=args.chunk, lines=1, chunk=args.chunk, capture=True)  # warm: imports, the history
    loud_s = run_time(args.items, args.lines, args.chunk, True, args.repeat)
    silent_s = run_time(args.items, args.lines, args.chunk, False, args.repeat)
    lines = args.items * args.lines
    per_print = one_print(100_000, args.repeat)
    out = {
        "items": args.items, "chunk": args.chunk, "lines": lines,
        "map_log_prints_s": round(loud_s, 4), "map_silent_s": round(silent_s, 4),
        "per_line_us": round((loud_s - silent_s) / lines * 1e6, 2), "print_in_capture_us": round(per_print * 1e6, 3),
    }
    report = sys.__stdout__  # before the fix, chunks printing at once could leave sys.stdout replaced
    print(f"map of {args.items} items x {args.lines} lines, chunks of {args.chunk}, min of {args.repeat}:", file=report)
    print(f"  log_prints    {loud_s:8.3f} s", file=report)
    print(f"  no prints     {silent_s:8.3f} s", file=report)
    print(f"  per line      {out['per_line_us']:8.2f} us (captured, stored)", file=report)
    print(f"print() inside a capture: {out['print_in_capture_us']:.3f} us CPU", file=report)
    print(json.dumps(out), file=report)


if __name__ == "__main__":
    main()
