"""Start a test's slow processes with the test before it in its module, so that their start-up
runs beside that test instead of after it (suite time, issue 23).

Only where the started processes mostly wait (a Ray head coming up: seconds of waiting on its
daemons) and load nothing the test beside them uses: drivers that spill hundreds of MB or fill
memory until the OOM killer comes, started beside Ray tests, slowed those tests by more than
they saved (measured: see the commit that backed that out).  ``selected`` keeps ``-k``, ``-m``
and the tiers from paying for a process no selected test reads.
"""

from __future__ import annotations

import pytest


def selected(request: pytest.FixtureRequest, *test_names: str) -> bool:
    """Whether a test of the requesting module named one of ``test_names`` (any parametrization)
    is to run in this session."""
    module = request.node.path
    return any(item.originalname in test_names and item.path == module for item in request.session.items)
