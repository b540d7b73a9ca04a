"""Where one map chunk's milliseconds go in the worker, in process: a plain chunk and a fused one.

    python benchmarks/chunk_profile.py [--n 1000000] [--repeat 15] [--profile]

Runs ``rf.reduce.sum(affine.map(xs))`` (plain) and ``rf.reduce.sum(affine.map(affine.map(xs)))``
(two maps fused: core.fusion) on the in-process runner, keeps the largest chunk's call
(``execute`` / ``execute_fused`` with its very arguments), then replays that call alone:
the best of ``--repeat`` (perf_counter), CPU time, and with ``--profile`` cProfile's top
functions by own time.  To A/B against another checkout, run it from a directory holding no
``rayflow`` package with ``PYTHONPATH`` naming the checkout, and alternate the two.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

import rayflow as rf
from rayflow.engine.driver import local_executor

CAUGHT: dict[str, tuple] = {}


def affine(x: int) -> int:
    return 2 * x + 1


def _catching(name: str, inner):
    def wrapped(payload, work, *values, **kwargs):
        size = work.job.size if work.job is not None else -1
        if size > CAUGHT.get(name, (-1,))[0]:
            CAUGHT[name] = (size, inner, payload, work, values, kwargs)
        return inner(payload, work, *values, **kwargs)

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10**6)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=18)
    args = parser.parse_args()
    local_executor.execute = _catching("plain", local_executor.execute)
    local_executor.execute_fused = _catching("fused", local_executor.execute_fused)
    t_affine = rf.task(affine)
    data = list(range(args.n))

    @rf.flow(name="chunk_plain", runner="local")
    def plain():
        return rf.reduce.sum(t_affine.map(data))

    @rf.flow(name="chunk_chain", runner="local")
    def chain():
        return rf.reduce.sum(t_affine.map(t_affine.map(data)))

    assert plain() == args.n * args.n
    assert chain() == 2 * args.n * args.n + args.n
    print(f"load {os.getloadavg()[0]:.1f}; rayflow from {os.path.dirname(rf.__file__)}")
    for name in ("plain", "fused"):
        size, inner, payload, work, values, kwargs = CAUGHT[name]
        wall, cpu = [], []
        for _ in range(args.repeat):
            t, c = time.perf_counter(), time.process_time()
            inner(payload, work, *values, **kwargs)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        print(f"{name:6s} chunk of {size}: best {min(wall) * 1e3:.2f} ms, median {sorted(wall)[len(wall) // 2] * 1e3:.2f} ms, "
              f"CPU best {min(cpu) * 1e3:.2f} ms")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(5):
                inner(payload, work, *values, **kwargs)
            prof.disable()
            print(f"--- cProfile, 5 calls of the {name} chunk, by own time")
            pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
