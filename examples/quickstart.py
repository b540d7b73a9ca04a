"""A small ETL flow: extract orders, then three parallel branches, then a report.

Run it with either of:

    python examples/quickstart.py
    rayflow run examples/quickstart.py:etl --param days=5 --param region=eu
    rayflow run examples/quickstart.py:regions --param 'regions=["eu","us","apac"]'

            extract(days, region)
           /          |          \\
      revenue     top_items    validate
           \\          |          /
                   report

``regions`` loops over its ``regions`` parameter and calls ``etl`` once per
region as a subflow (task keys ``etl/extract``, ``etl-2/extract``, ...).
"""

from __future__ import annotations

import random
import time

import rayflow as rf


@rf.task
def extract(days: int, region: str) -> list[dict]:
    rng = random.Random(f"{region}-{days}")
    items = ["tea", "coffee", "cake", "juice"]
    return [
        {"day": d, "item": rng.choice(items), "qty": rng.randint(1, 5), "price": rng.choice([2.5, 3.0, 4.5])}
        for d in range(days)
        for _ in range(20)
    ]


@rf.task(num_cpus=1)
def revenue(orders: list[dict]) -> float:
    time.sleep(0.5)  # stands in for real work; the three branches overlap
    return round(sum(o["qty"] * o["price"] for o in orders), 2)


@rf.task(num_cpus=1)
def top_items(orders: list[dict], k: int = 2) -> list[str]:
    time.sleep(0.5)
    counts: dict[str, int] = {}
    for o in orders:
        counts[o["item"]] = counts.get(o["item"], 0) + o["qty"]
    return sorted(counts, key=lambda item: (-counts[item], item))[:k]


@rf.task
def validate(orders: list[dict]) -> int:
    bad = [o for o in orders if o["qty"] <= 0 or o["price"] <= 0]
    if bad:
        raise ValueError(f"{len(bad)} invalid orders")
    return len(orders)


@rf.task
def report(region: str, total: float, best: list[str], rows: int) -> dict:
    return {"region": region, "revenue": total, "top": best, "rows": rows}


@rf.flow
def etl(days: int = 3, region: str = "eu") -> dict:
    orders = extract(days, region)
    return report(region, revenue(orders), top_items(orders, k=2), validate(orders))


@rf.task
def best_region(reports: list[dict]) -> str:
    return max(reports, key=lambda r: r["revenue"])["region"]


@rf.flow
def regions(regions: list[str] = ["eu", "us"], days: int = 3) -> dict:  # noqa: B006
    reports = [etl(days=days, region=region) for region in regions]  # a loop over a parameter: one subflow each
    return {"best": best_region(reports), "reports": reports}


if __name__ == "__main__":
    run = etl.run(days=3, region="eu")
    for key, state in run.task_states.items():
        print(f"{key:<10} {state.type.value:<8} {state.duration:.3f}s")
    print("run id:", run.run_id)
    print("result:", run.result())
    both = regions.run(regions=["eu", "us"])
    print("subflows:", [key for key in both.task_states if "/" not in key])
    print("best region:", both.result()["best"])
