"""Flows for the resume tests, importable by target (``resumable:chain``)."""

from __future__ import annotations

import pathlib

import rayflow as rf


def _count(root: str, name: str) -> None:
    with open(pathlib.Path(root) / f"{name}.count", "a") as f:
        f.write("ran\n")


@rf.task(persist=True)
def load(root: str) -> list[int]:
    _count(root, "load")
    return [1, 2, 3]


@rf.task(persist=True)
def fragile(xs: list[int], root: str) -> int:
    _count(root, "fragile")
    if (pathlib.Path(root) / "fail").exists():
        raise RuntimeError("fragile failed this time")
    return sum(xs)


@rf.task(persist=True)
def report(total: int, root: str) -> str:
    _count(root, "report")
    return f"total={total}"


@rf.task(persist=True)
def side(root: str) -> str:
    _count(root, "side")
    return "side"


@rf.flow
def chain(root: str, extra: int = 0):
    xs = load(root)
    out = report(fragile(xs, root), root)
    sides = [side.with_options(name=f"side-{i}")(root) for i in range(extra)]
    return {"report": out, "side": side(root), "extras": sides}


@rf.task(persist=True, chunk_size=100)
def scale(x: int, root: str) -> int:
    with open(pathlib.Path(root) / "items.log", "a") as f:
        f.write(f"{x}\n")
    if x in (150, 750) and (pathlib.Path(root) / "fail").exists():
        raise ValueError(f"item {x} failed this time")
    return 3 * x


@rf.task(persist=True, chunk_size=100)
def shift(y: int, root: str) -> int:
    with open(pathlib.Path(root) / "shifted.log", "a") as f:
        f.write(f"{y}\n")
    return y + 1


@rf.task
def add_up(ys: list[int]) -> int:
    return sum(ys)


@rf.flow
def mapped(root: str, n: int = 1000):
    return add_up(shift.map(scale.map(range(n), rf.unmapped(root)), rf.unmapped(root)))


@rf.task(persist=True, chunk_size=4)
def expand(x: int, root: str) -> list[int]:
    return [x, x]


@rf.task(persist=True, chunk_size=4)
def bump(y: int) -> int:
    return y + 1


@rf.task
def picky_total(ys: list[int], root: str) -> int:
    if (pathlib.Path(root) / "fail").exists():
        raise ValueError("the total fails this time")
    return sum(ys)


@rf.flow
def flattened(root: str, n: int = 10):
    return picky_total(bump.map(rf.flatten(expand.map(range(n), rf.unmapped(root)))), root)


# -- values for the write-behind tests: they notice being written to the result store --------


def _in_result_store() -> bool:
    import inspect

    return any(frame.filename.endswith(("rayflow/results.py", "rayflow\\results.py")) for frame in inspect.stack())


class Gate:
    """A value whose write to the result store waits until ``path`` exists (made downstream):
    were downstream tasks to wait for the write, the write would give up after 30 s and fail."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        if _in_result_store():
            import os
            import time

            deadline = time.time() + 30
            while not os.path.exists(self.path):
                if time.time() > deadline:
                    raise TimeoutError("the downstream task never ran while this value was being written")
                time.sleep(0.01)
        return (Gate, (self.path,))


class SlowToStore:
    """A value whose write to the result store takes 5 s."""

    def __reduce__(self):
        if _in_result_store():
            import time

            time.sleep(5)
        return (SlowToStore, ())


@rf.task(persist=True)
def slow_to_store() -> SlowToStore:
    return SlowToStore()


@rf.flow
def slow_write():
    return slow_to_store()


@rf.task(persist=True)
def rows(n: int) -> list:
    return [{"v": 1} for _ in range(n)]


@rf.task
def edit_last(xs: list) -> int:
    xs[-1]["v"] += 100  # edits the upstream's value in place
    return sum(x["v"] for x in xs)


@rf.flow
def edited(n: int = 3):
    return edit_last(rows(n))


class Unstorable:
    """A value Ray can carry but the result store cannot write."""

    def __reduce__(self):
        if _in_result_store():
            raise TypeError("this value refuses to be stored")
        return (Unstorable, ())


@rf.task(persist=True)
def gated(path: str) -> Gate:
    return Gate(path)


@rf.task
def opens(gate: Gate) -> str:
    pathlib.Path(gate.path).write_text("")
    return "opened"


@rf.flow
def write_behind(path: str):
    return opens(gated(path))


@rf.task(persist=True)
def unstorable() -> Unstorable:
    return Unstorable()


@rf.task
def after(value: Unstorable) -> str:
    return "ran anyway"


@rf.flow
def not_kept():
    return after(unstorable())
