"""Flows whose tasks record artifacts (rf.artifacts), for tests/test_artifacts.py: a module of
its own, so Ray workers import it by name."""

from __future__ import annotations

import struct
import zlib

import rayflow as rf


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    """A real PNG (grey pixels), made here: no image library needed."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@rf.task
def report(label: str, png_path: str) -> str:
    rf.artifacts.markdown(
        f"# Report {label}\n\n*fine* <script>alert('md')</script> <b>raw</b> "
        "[bad](javascript:alert(1)) [good](https://example.com/ok)\n\n| a | b |\n|---|---|\n| 1 | 2 |",
        key="report",
    )
    rf.artifacts.table([{"city": "<b>Oslo</b>", "n": 12}, {"city": "Bergen", "n": 7.5, "extra": None}], key="cities")
    rf.artifacts.link("https://example.com/dash?a=1&b=2", text="the <dashboard>")
    rf.artifacts.image(tiny_png(), key="picture")
    rf.artifacts.image(png_path)  # the same kind from a file
    rf.artifacts.progress(0.25, key="load")
    rf.artifacts.progress(1.0, key="load")  # the same key: updates the run's one row
    # Bad arguments: one ERROR record each in the task's logs, nothing recorded, the task goes on.
    rf.artifacts.progress(1.5, key="load")
    rf.artifacts.image(b"GIF89a not a png")
    rf.artifacts.image(png_path + ".missing")
    rf.artifacts.table(42)
    rf.artifacts.markdown("x", key="bad key!")
    rf.artifacts.link("javascript:alert(1)")
    return label


@rf.task
def big_table(rows: int) -> int:
    rf.artifacts.table([[r * 100 + c for c in range(60)] for r in range(rows)], key="big")
    rf.artifacts.markdown("y" * 100_050)
    return rows


@rf.task
def item(x: int) -> int:
    rf.artifacts.markdown(f"item **{x}**", key="per-item")
    return x


@rf.task
def breaks() -> int:
    rf.artifacts.markdown("written before the failure", key="before-failure")
    raise RuntimeError("the task fails after its artifact")


@rf.flow
def reporting(label: str = "one", png_path: str = "", fail: bool = False) -> dict:
    out = {"report": report(label, png_path), "big": big_table(1500), "items": item.map(range(3))}
    if fail:
        out["breaks"] = breaks()
    return out
