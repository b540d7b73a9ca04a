"""Flows the UI's tests serve with `rayflow serve --ui` (a module of its own: Ray workers import it by name)."""

from __future__ import annotations

import rayflow as rf


@rf.task
def shout(word: str) -> str:
    return word.upper()


@rf.flow
def shouted(word: str = "hello") -> str:
    """On Ray (the default runner)."""
    return shout(word)


@rf.flow
def picky(n: int = 1) -> str:
    """Its body refuses 13 while the graph is traced: the run fails before it starts."""
    if n == 13:
        raise ValueError("thirteen is not welcome here")
    return shout(str(n))


@rf.task
def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@rf.flow(runner="local")
def napping(seconds: float = 20.0) -> float:
    """In-process, and slow: a run now of it can be cancelled while it goes."""
    return nap(seconds)
