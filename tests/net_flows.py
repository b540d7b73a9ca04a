"""Flows for the network-namespace test bed (test_netbed.py): importable on every test host
(tests/ is on each node's PYTHONPATH).  Each item appends ``<item> <host address>`` to
``ROOT/items.log`` as it starts, so a test sees where and how often each item ran."""

from __future__ import annotations

import os
import pathlib
import time

import rayflow as rf


def _mark(root: str, x: int) -> str:
    """This host's address, written down with the item (when ``root`` is given)."""
    import ray

    here = ray.util.get_node_ip_address()
    if root:
        with open(pathlib.Path(root) / "items.log", "a") as f:
            f.write(f"{x} {here} {os.getpid()}\n")
    return here


@rf.task(chunk_size=10, retries=0, tags={"netdb"})  # no limit named netdb: no limit, until a test sets one
def square(x: int, root: str = "", delay: float = 0.0, slow_on: str = "") -> int:
    """x*x after ``delay`` s, or 2 s on host ``slow_on`` (its chunk still runs when it is cut off);
    ROOT/spans.log gets ``<item> <start> <end>``."""
    started = time.time()
    here = _mark(root, x)
    time.sleep(2.0 if here == slow_on else delay)
    if root:
        with open(pathlib.Path(root) / "spans.log", "a") as f:
            f.write(f"{x} {started} {time.time()}\n")
    return x * x


@rf.flow
def squares(n: int = 300, root: str = "", delay: float = 0.0, slow_on: str = "") -> int:
    """The sum of x*x for x < n, as a map of chunks of 10 items."""
    return total(square.map(range(n), root=rf.unmapped(root), delay=rf.unmapped(delay), slow_on=rf.unmapped(slow_on)))


@rf.task
def total(values: list[int]) -> int:
    return sum(values)


@rf.task(chunk_size=10, retries=0, persist=True)
def kept_square(x: int, root: str = "", delay: float = 0.0) -> int:
    _mark(root, x)
    time.sleep(delay)
    return x * x


@rf.flow
def kept_squares(n: int = 120, root: str = "", delay: float = 0.0) -> int:
    """squares, each chunk's values kept in the result store (for ``rayflow resume``)."""
    return total(kept_square.map(range(n), root=rf.unmapped(root), delay=rf.unmapped(delay)))


def expected(n: int) -> int:
    return sum(x * x for x in range(n))
