"""Mapping: score every row of a day, in chunks on Ray, then total the scores.

    python examples/daily_scores.py
    rayflow run examples/daily_scores.py:daily --param day=2026-11-24 --param weight=2

    fetch(day) --> score.map(rows, weight) --> total
                        (one chunk per Ray task, a state per row)
"""

from __future__ import annotations

import random

import rayflow as rf


@rf.task(retries=3, retry_delay=0.5, timeout=30)
def fetch(day: str) -> list[dict]:
    rng = random.Random(day)
    return [{"id": i, "clicks": rng.randint(0, 50), "views": rng.randint(1, 500)} for i in range(5_000)]


@rf.task
def score(row: dict, weight: float) -> float:
    if row["clicks"] > row["views"]:
        raise rf.Skip("impossible row")  # skipped items are left out of the total
    return weight * row["clicks"] / row["views"]


@rf.task
def total(xs: list[float]) -> float:
    return round(sum(xs), 3)


@rf.flow
def daily(day: str = "2026-11-24", weight: float = 1.0) -> float:
    rows = fetch(day)
    scores = score.map(rows, weight=rf.unmapped(weight))
    return total(scores)


if __name__ == "__main__":
    run = daily.run()
    states = run.map_states("score")
    print(f"{len(states)} rows scored, {sum(s.is_skipped() for s in states)} skipped")
    print("state:", run.state.type.value, "-", run.task_states["score"].message)
    print("total:", run.result())
