"""A fused worker call's values (engine.worker.fused): one per stage whichever stage the chain
stops at, and none holding its values twice (ChunkResult.live stays inside the call)."""

from __future__ import annotations

import pathlib

import rayflow as rf
from rayflow.engine.driver import local_executor


@rf.task(chunk_size=4)
def head(x: int) -> int:
    return x + 1


@rf.task(retries=1, retry_on=(OSError,))
def middle(x: int, root: str) -> int:
    once = pathlib.Path(root) / "failed"
    if x == 6 and not once.exists():
        once.write_text("1")
        raise OSError("once")  # its chunk does not settle on its first run: the chain stops there
    return 2 * x


@rf.task
def tail(x: int) -> float:
    return x / 2


def test_a_chain_stopped_at_any_stage_returns_a_value_per_stage_and_no_live_values(monkeypatch, tmp_path):
    calls = []
    inner = local_executor.execute_fused

    def recorded(payload, work, *values, **kwargs):
        out, reports = inner(payload, work, *values, **kwargs)
        calls.append((len(work.fused) + 1, out, reports))
        return out, reports

    monkeypatch.setattr(local_executor, "execute_fused", recorded)

    @rf.flow(runner="local")
    def chain():
        return tail.map(middle.map(head.map(range(12)), rf.unmapped(str(tmp_path))))

    run = chain.run()
    assert run.result() == [float(x + 1) for x in range(12)]
    assert run.task_result("middle") == [2 * (x + 1) for x in range(12)]
    assert calls and all(len(out) == len(reports) == stages for stages, out, reports in calls)
    stopped = [out for _, out, _ in calls if out[1] is not None and out[2] is None]
    assert stopped, "the chunk of item 5 stops after middle"
    assert all(value.live is None for _, out, _ in calls for value in out if value is not None)
