"""Reference flows for the tests, each with a plain-Python oracle (``*_calc``).

Kept in a module of its own so Ray workers can import the helpers by name.
"""

from __future__ import annotations

import os
import time

import rayflow as rf


@rf.task
def extract(n: int) -> list[int]:
    return list(range(n))


@rf.task
def clean(xs: list[int]) -> list[int]:
    return [x for x in xs if x % 2 == 0]


@rf.task
def audit(xs: list[int]) -> dict:
    return {"count": len(xs), "total": sum(xs)}


@rf.task
def load(cleaned: list[int], report: dict) -> dict:
    return {"loaded": sum(cleaned), "of": report["total"], "rows": report["count"]}


@rf.flow
def diamond(n: int = 10) -> dict:
    r"""
      extract
       /   \
    clean  audit
       \   /
       load
    """
    xs = extract(n)
    return load(clean(xs), audit(xs))


def diamond_calc(n: int = 10) -> dict:
    xs = list(range(n))
    return {"loaded": sum(x for x in xs if x % 2 == 0), "of": sum(xs), "rows": len(xs)}


@rf.task
def timed_sleep(seconds: float, label: str) -> dict:
    """Sleeps and reports when and where it ran, as measured in the worker."""
    start = time.time()
    time.sleep(seconds)
    return {"label": label, "start": start, "end": time.time(), "pid": os.getpid()}


@rf.flow
def two_branches(seconds: float = 1.0) -> list:
    """
    sleep_a   sleep_b      (independent)
    """
    return [timed_sleep(seconds, "a"), timed_sleep(seconds, "b")]


class Boom(ValueError):
    """A user exception type that must survive the trip back from the worker."""


@rf.task
def explode(x: int) -> int:
    raise Boom(f"bad input {x}")


@rf.task
def add(x: int, y: int) -> int:
    return x + y


@rf.flow
def failing(x: int = 1) -> int:
    """
    add -> explode -> add-2
    """
    return add(explode(add(x, 1)), 10)


@rf.flow
def adds(x: int = 1) -> int:
    """add(x, 2): the smallest flow, for runs around a fault"""
    return add(x, 2)


@rf.flow
def failing_branch(x: int = 1) -> dict:
    """
    explode    add         (independent; explode's failure must not stop add)
       |
      add-2
    """
    return {"bad": add(explode(x), 1), "good": add(x, 2)}


@rf.task
def sleeper(pid_dir: str, label: str, seconds: float) -> str:
    """Records its pid (so a test can check the process is gone), then sleeps."""
    with open(os.path.join(pid_dir, f"{label}.pid"), "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(seconds)
    with open(os.path.join(pid_dir, f"{label}.done"), "w") as fh:
        fh.write("finished")
    return label


@rf.flow
def long_flow(pid_dir: str, seconds: float = 60.0) -> str:
    """
    sleeper(a)   sleeper(b)
          \\       /
           report           cancelled runs must leave none of them running
    """
    a = sleeper(pid_dir, "a", seconds)
    b = sleeper(pid_dir, "b", seconds)
    return sleeper(pid_dir, "after", 0.0, wait_for=[a, b])


@rf.task
def gate(pid_dir: str, label: str, timeout: float = 60.0) -> str:
    """Records its pid, then waits until the test creates ``<label>.release`` (or ``timeout``)."""
    with open(os.path.join(pid_dir, f"{label}.pid"), "w") as fh:
        fh.write(str(os.getpid()))
    deadline = time.time() + timeout
    while not os.path.exists(os.path.join(pid_dir, f"{label}.release")) and time.time() < deadline:
        time.sleep(0.05)
    return label


@rf.flow
def gated_flow(pid_dir: str) -> str:
    """
    gate(a)  ->  sleeper(after)       runs until the test releases gate a
    """
    return sleeper(pid_dir, "after", 0.0, wait_for=[gate(pid_dir, "a")])


@rf.task
def slow_item(pid_dir: str, i: int) -> int:
    """An item of a large map: records its worker's pid once, then takes 10 ms."""
    marker = os.path.join(pid_dir, f"{os.getpid()}.pid")
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
    time.sleep(0.01)
    return i


@rf.task
def total(xs: list[int]) -> int:
    return sum(xs)


@rf.flow
def large_map(pid_dir: str, n: int = 100_000) -> int:
    """slow_item x n (10 ms each: minutes of work on 2 CPUs) -> total"""
    return total(slow_item.map(rf.unmapped(pid_dir), range(n)))
