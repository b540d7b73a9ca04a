"""Artifacts: what a task wants a person to see, kept with its run (rf.artifacts).

Run it, then look:

    python examples/artifacts.py              # or: rayflow run examples/artifacts.py:artifacts_demo
    rayflow artifacts ls                      # the latest version of each key
    rayflow artifacts show sales-report       # the markdown as written
    rayflow ui                                # /artifacts, /artifacts/sales-report, the run's page

Each run adds a version of every keyed artifact; ``progress`` keeps one row per run and key.
"""

from __future__ import annotations

import random
import struct
import zlib

import rayflow as rf


def bar_chart_png(values: list[float], height: int = 60) -> bytes:
    """A tiny bar chart as a PNG, drawn by hand (no image library): one grey bar per value."""
    width = 12 * len(values)
    top = max(values) or 1.0
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")  # filter byte: none
        for v in values:
            filled = y >= height - int(height * v / top)
            row += (b"\x50" if filled else b"\xff") * 10 + b"\xff" * 2
        rows.append(bytes(row))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")


@rf.task
def extract(days: int) -> list[dict]:
    rng = random.Random(days)
    return [{"day": d, "region": rng.choice(["eu", "us", "apac"]), "sales": round(rng.uniform(50, 150), 2)} for d in range(days)]


@rf.task
def check(row: dict) -> dict:
    rf.artifacts.progress((row["day"] + 1) / 10, key="checks")  # the last call of the run wins
    if row["sales"] > 145:
        rf.artifacts.markdown(f"day {row['day']}: unusually high sales, **{row['sales']}**")  # no key: on the run's page
    return row


@rf.task
def report(rows: list[dict]) -> float:
    total = sum(r["sales"] for r in rows)
    rf.artifacts.markdown(
        f"# Sales report\n\n{len(rows)} days, total **{total:,.2f}**.\n\n"
        "| region | days |\n|---|---|\n"
        + "".join(f"| {g} | {sum(r['region'] == g for r in rows)} |\n" for g in ("eu", "us", "apac")),
        key="sales-report",
    )
    rf.artifacts.table(rows, key="sales-rows")
    rf.artifacts.image(bar_chart_png([r["sales"] for r in rows]), key="sales-chart")
    rf.artifacts.link("https://example.com/sales", text="the sales dashboard")
    return total


@rf.flow
def artifacts_demo(days: int = 10) -> float:
    rows = check.map(extract(days))
    return report(rows)


if __name__ == "__main__":
    run = artifacts_demo.with_options(runner="local").run()
    print(run.state, run.result())
    print(f"rayflow artifacts ls --run {run.run_id}")
