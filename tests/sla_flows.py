"""Flows with an SLA, for tests/test_sla.py (a module of their own: `rayflow serve` loads them)."""

from __future__ import annotations

import time
from datetime import timedelta

import rayflow as rf


@rf.task
def nap(s: float) -> float:
    time.sleep(s)
    return s


@rf.flow(runner="local", sla=rf.SLA(late_after=timedelta(seconds=0.5), max_duration=timedelta(seconds=1.5),
                                    cancel_overdue=True))
def promised(s: float = 0.0):
    return nap(s)
