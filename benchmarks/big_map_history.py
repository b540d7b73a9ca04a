"""A history with one run of a big map, written as the engine records it, and the map pages' server times.

    python benchmarks/big_map_history.py [--items 1000000] [--failed 10000] [--repeat 5]

``write_big_map_history(home, ...)`` writes, through ``RunStore.write`` (what a
HistoryRecorder writes), one run of flow ``big_map`` whose map ``work`` has
``items`` items in chunks of ``chunk``: a chunk row per chunk (its counts by
state, its times), one item row per item that did not succeed or was run again
(``failed`` FAILED items over five error types, one of them rare; ``skipped``
SKIPPED; ``retried`` that succeeded at their second attempt), an ERROR log
record per failed item (with its map index), the map's transitions and the
run's graph.  No flow runs: 10^6 items are written in seconds.  Other
benchmarks (``benchmarks/ui_bench.py``) and tests import it; it returns the
run id, the map key and what it wrote.

Run as a script it times the map page, its filtered and deep pages, an
item's page and the task page through Starlette's test client (the app's own
time, no network; min of --repeat) and prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

ERROR_TYPES = ("ValueError", "KeyError", "TimeoutError", "ConnectionError")  # the common ones, in turn
RARE_ERROR = "ZeroDivisionError"  # every 100th failed item: a filter that matches few rows
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/flows/big.py", line 42, in work\n    value = transform(record)\n'
    '  File "/srv/flows/big.py", line 17, in transform\n    raise {kind}(f"bad record {{index}}")\n'
)


def write_big_map_history(
    home: str | pathlib.Path, *, items: int = 1_000_000, failed: int = 10_000, skipped: int = 1_000,
    retried: int = 2_000, chunk: int = 1_000, run_id: str = "big-map-run", map_key: str = "work",
    started: float | None = None,
) -> dict:
    """Write the run (see the module's docstring); the facts written, for checks."""
    from rayflow.store import RunStore

    store = RunStore(home)
    t0 = time.time() - 3600 if started is None else started
    fail_every, skip_every, retry_every = items // max(failed, 1), items // max(skipped, 1), items // max(retried, 1)
    item_rows, logs, chunk_rows = [], [], []
    states: dict[str, int] = {}
    errors: dict[str, int] = {}
    span = 600.0  # the map's chunks end over ten minutes
    for start in range(0, items, chunk):
        stop = min(start + chunk, items)
        counts: dict[str, int] = {}
        for index in range(start, stop):
            if failed and index % fail_every == fail_every - 1 and index // fail_every < failed:
                n = index // fail_every
                kind = RARE_ERROR if n % 100 == 99 else ERROR_TYPES[n % len(ERROR_TYPES)]
                message = f"bad record {index}\nwhile reading part {index // chunk}"
                item_rows.append((run_id, 1, map_key, index, "FAILED", 3, kind, message,
                                  TRACEBACK.format(kind=kind) + f"{kind}: bad record {index}\n"))
                logs.append((run_id, t0 + 1, "ERROR", f"item {index} failed: {kind}", map_key, index, None, None, 1))
                state = "FAILED"
                errors[kind] = errors.get(kind, 0) + 1
            elif skipped and index % skip_every == skip_every // 2 and index // skip_every < skipped:
                item_rows.append((run_id, 1, map_key, index, "SKIPPED", 1, None, "skipped: empty record", None))
                state = "SKIPPED"
            elif retried and index % retry_every == retry_every // 3 and index // retry_every < retried:
                item_rows.append((run_id, 1, map_key, index, "SUCCESS", 2, None, None, None))
                state = "SUCCESS"
            else:
                state = "SUCCESS"
            counts[state] = counts.get(state, 0) + 1
            states[state] = states.get(state, 0) + 1
        began = t0 + 5 + span * start / items
        ended = t0 + 5 + span * stop / items + (0.5 if start % (10 * chunk) else 4.0)  # a slow chunk now and then
        chunk_rows.append((run_id, map_key, start, stop, stop - start, json.dumps(counts), began, ended,
                           None, 1, 0))
    end = t0 + 5 + span + 5
    nodes = [
        {"key": "source", "name": "source", "kind": "task", "upstream": [], "wait_for": [], "conditions": []},
        {"key": map_key, "name": map_key, "kind": "map", "upstream": ["source"], "wait_for": [], "conditions": []},
    ]
    graph = {"flow": "big_map", "nodes": nodes, "target": None, "resumed_from": None, "code": {}, "driver": {}, "attempt": 1}
    first_error = f"; first error: {ERROR_TYPES[0]}: bad record {fail_every - 1}" if failed else ""
    transitions = [
        (run_id, "source", 1, "RUNNING", 1, "", None, None, t0, t0, None, 1),
        (run_id, "source", 2, "SUCCESS", 1, "", None, None, t0 + 1, t0, t0 + 1, 1),
        (run_id, map_key, 1, "RUNNING", 1, "", None, None, t0 + 5, t0 + 5, None, 1),
        (run_id, map_key, 2, "MAPPED", 1, f"{items} items, {failed} failed{first_error}", None, None, end, t0 + 5, end, 1),
    ]
    state = "FAILED" if failed else "SUCCESS"
    run = (run_id, "big_map", json.dumps({"items": items}), state, f"map {map_key}: {failed} items failed" if failed else "",
           t0, end, None, json.dumps(["source", map_key]), 1)
    store.write([run], transitions, chunk_rows, logs, [(run_id, json.dumps(graph))], items=item_rows)
    return {"run_id": run_id, "map_key": map_key, "items": items, "states": states, "errors": errors,
            "item_rows": len(item_rows), "chunks": len(chunk_rows)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--failed", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from starlette.testclient import TestClient

    from rayflow.ui import create_app

    home = tempfile.mkdtemp(prefix="rayflow-big-map-")
    began = time.perf_counter()
    facts = write_big_map_history(home, items=args.items, failed=args.failed)
    written = time.perf_counter() - began
    client = TestClient(create_app(home), base_url="http://127.0.0.1:4200")
    run, key = facts["run_id"], facts["map_key"]
    last = client.get(f"/runs/{run}/maps/{key}", params={"state": "FAILED"})  # find a deep page's start
    deep_after = args.items - args.items // 100
    pages = {
        "map page (first 50 item rows)": f"/runs/{run}/maps/{key}",
        "map page, state=FAILED": f"/runs/{run}/maps/{key}?state=FAILED",
        f"map page, error={RARE_ERROR} (rare)": f"/runs/{run}/maps/{key}?error={RARE_ERROR}",
        "map page, error=KeyError&state=FAILED": f"/runs/{run}/maps/{key}?error=KeyError&state=FAILED",
        f"map page, after={deep_after} (last pages)": f"/runs/{run}/maps/{key}?after={deep_after}",
        "map page, state=SKIPPED (sparse)": f"/runs/{run}/maps/{key}?state=SKIPPED",
        "an item's page (a failed item)": f"/runs/{run}/maps/{key}/items/{args.items // max(args.failed, 1) - 1}",
        "the map's task page": f"/runs/{run}/tasks/{key}",
    }
    assert last.status_code == 200
    rows = {}
    for label, path in pages.items():
        times = []
        for _ in range(args.repeat + 1):
            start = time.perf_counter()
            response = client.get(path)
            times.append(time.perf_counter() - start)
            assert response.status_code == 200, (path, response.status_code, response.text[:300])
        rows[label] = min(times[1:])
    print(f"one run of a {args.items}-item map: {facts['item_rows']} item rows ({args.failed} failed), "
          f"{facts['chunks']} chunk rows, written in {written:.1f} s; min of {args.repeat}")
    print(f"{'page':48s} {'ms':>8s}")
    for label, seconds in rows.items():
        print(f"{label:48s} {seconds * 1000:8.1f}")
    print(json.dumps({"items": args.items, "failed": args.failed, "ms": {k: round(v * 1000, 1) for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
