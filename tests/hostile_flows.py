"""Flows whose every name, parameter, log line, error and artifact is hostile text, for
tests/test_ui_hostile.py (a module of its own, so workers import it by name)."""

from __future__ import annotations

import logging

from artifact_flows import tiny_png

import rayflow as rf

XSS = '"><img src=x onerror=alert(1)><script>alert(2)</script>{{7*7}}'
TASK = '<b>t<b>"a?b#c%2Fd&amp;'  # markup, a query and a fragment mark, an escaped slash, an entity (a name has no '/')
MAP = "<i>m<i>?x=1#y'"
FLOW = 'hostile "><img src=x onerror=alert(12)>{{7*7}}?#'


@rf.task(name=TASK)
def hostile_task(text: str) -> str:
    logging.getLogger("rayflow.task").warning("log line %s", XSS)
    rf.artifacts.markdown(
        f"# {XSS}\n\n<script>alert(3)</script> <style>body{{display:none}}</style> "
        '<a href="javascript:alert(4)">raw a</a> [js](javascript:alert(5)) [js2](JaVaScRiPt:alert(6)) '
        "[data](data:text/html;base64,PHNjcmlwdD4=) [vb](vbscript:x) [tab](java\tscript:alert(7)) "
        '![img](https://example.com/x.png) [t](https://example.com/ "x\\" onmouseover=\\"alert(8)") '
        "<img src=x onerror=alert(9)>\n\n[ref]: javascript:alert(10)\n\n[refd][ref]",
        key="hostile-report",
    )
    rf.artifacts.table([{XSS: XSS, "n": 1}], key="hostile-table")
    rf.artifacts.link("https://example.com/?q=\"><script>alert(11)</script>", text=XSS, key="hostile-link")
    rf.artifacts.image(tiny_png(), key="hostile-image")
    return text


@rf.task(name=MAP)
def hostile_item(x: int) -> int:
    if x % 2:
        raise ValueError(f"item {x} {XSS}")
    return x


@rf.task
def fails(text: str) -> str:
    raise RuntimeError(f"boom {text}")


@rf.flow(name=FLOW)
def hostile(text: str = XSS, fail: bool = True) -> dict:
    out = {"t": hostile_task(text), "m": hostile_item.map(range(4))}
    if fail:
        out["f"] = fails(text)
    return out
