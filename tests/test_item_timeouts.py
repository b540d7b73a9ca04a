"""One item-timeout contract on both runners (issue 23): an item of a map past its task's
``timeout`` ends TIMED_OUT, and a retry of it is timed the same.  On a Ray worker's main
thread SIGALRM interrupts the item; on the in-process runner's threads (where SIGALRM
cannot reach) the item runs on a helper thread and is abandoned at its deadline, as the
in-process runner abandons a plain task past its timeout.  Before, the in-process runner
dropped the timeout without a word and the item ended SUCCESS.
"""

from __future__ import annotations

import pathlib
import time

import rayflow as rf
from rayflow.states import StateType as T


@rf.task(timeout=0.5, retries=1, chunk_size=4)
def held(x: int, root: str) -> int:
    """Item 1 waits for ``release`` (at most 20 s; a test releases it when its run is over)."""
    if x == 1:
        release = pathlib.Path(root) / "release"
        deadline = time.monotonic() + 20
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return x


def test_an_item_past_its_timeout_is_timed_out_on_every_runner(runner, tmp_path):
    @rf.flow
    def timed():
        return held.map(range(6), rf.unmapped(str(tmp_path)))

    try:
        run = timed.with_options(runner=runner).run()
    finally:
        (tmp_path / "release").touch()  # the abandoned item's thread (in-process runner) ends
    states = run.map_states("held")
    assert [s.type for s in states] == [T.SUCCESS, T.TIMED_OUT] + [T.SUCCESS] * 4
    assert states[1].attempt == 2 and "timed out after 0.5s" in states[1].message
    assert run.task_result("held") == [0, None, 2, 3, 4, 5]
    assert run.state.type is T.FAILED
