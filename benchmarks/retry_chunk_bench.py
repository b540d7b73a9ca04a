"""The recording cost of a large retry chunk: N items run again (attempt 2, every one succeeds),
each of which the history gets a row for.  Measures, in this process, run_chunk (the worker),
its summary pickled and unpickled (what Ray carries to the actor) and the work's item rows made
(maps.outcomes, in the actor): best of 30, thread CPU time.

    python benchmarks/retry_chunk_bench.py [N]     # N defaults to 50000
"""
import pickle, sys, time
import numpy as np
from rayflow.core.refs import MapInput
from rayflow.engine.payload import dump_payload
from rayflow.engine.protocol import ChunkJob, Piece
from rayflow.engine.worker.chunk import run_chunk
from rayflow.engine.maps import outcomes as O

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
def double(x):
    return 2 * x
opts = {"batch": False, "timeout": None, "concurrency": None, "skip_on_upstream_skip": True, "count_flat": False, "store": None, "persist": False}
payload = dump_payload((double, (MapInput(0),), {}, (), (Exception,), opts))
values = [np.arange(N)]
job = ChunkJob(map_key="m", chunk=0, start=0, size=N, sources=((Piece("column", (0,), 0, N),),), indices=tuple(range(N)), attempts=(2,) * N)

def rows(summary):
    return O._rows(0, summary, set())

def best(f):
    b = 1e9
    for _ in range(30):
        t = time.thread_time(); f(); b = min(b, time.thread_time() - t)
    return b * 1e3
_, summary = run_chunk(payload, job, 1, values)
wire = pickle.dumps(summary, 5)
got = rows(pickle.loads(wire))
assert len(got) == N and got[7] == (7, "SUCCESS", 2, None, None, None), got[7]
w = best(lambda: run_chunk(payload, job, 1, values))
p = best(lambda: pickle.loads(pickle.dumps(summary, 5)))
r = best(lambda: rows(summary))
print(f"N={N}: run_chunk {w:.1f} ms, summary pickled+unpickled {p:.1f} ms ({len(wire)/1e3:.0f} kB), rows {r:.1f} ms; total {w+p+r:.1f} ms")
