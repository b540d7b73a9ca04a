"""Prefect 3's task overhead, the anchor users would otherwise pick: measured once, by hand, from a
virtual environment of its own (Prefect is not a dependency of rayflow, nor of its benchmarks):

    python3 -m venv /tmp/prefect-venv && /tmp/prefect-venv/bin/pip install prefect
    PREFECT_HOME=$(mktemp -d) PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_LOGGING_LEVEL=WARNING \
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=180 \
        /tmp/prefect-venv/bin/python benchmarks/prefect_anchor.py [--tasks 1000] [--repeat 3]

(on a loaded machine its temporary server needs the longer start-up timeout, and with its
analytics on it failed with "database is locked"; the traceback it prints as it stops is its
server's shutdown).

Its default set-up: a temporary local API server started by the first flow, the default
thread-pool task runner.  Times a warm one-task flow, and a flow of N trivial tasks submitted
with ``.map`` and their results gathered; min of the repetitions.  Prints one JSON line; the
README's performance section records the numbers with Prefect's version.
"""

from __future__ import annotations

import argparse
import json
import time

import prefect
from prefect import flow, task


@task
def noop(i: int) -> int:
    return i


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    @flow
    def one() -> int:
        return noop(1)

    @flow
    def many(n: int) -> list[int]:
        return [f.result() for f in noop.map(range(n))]

    started = time.perf_counter()
    one()  # starts the temporary server
    first = time.perf_counter() - started
    ones, manys = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        one()
        ones.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert many(args.tasks) == list(range(args.tasks))
        manys.append(time.perf_counter() - t)
    result = {
        "prefect": prefect.__version__,
        "first_flow_s": round(first, 3),
        "one_task_flow_s": round(min(ones), 4),
        "tasks": args.tasks,
        "many_s": round(min(manys), 3),
        "ms_per_task": round(min(manys) / args.tasks * 1000, 3),
        "repeat": args.repeat,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
