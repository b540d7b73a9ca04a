"""One presentation of states (category, colour, style, symbol, order) and of durations and
times, read by the CLI's tables, the UI's pages and graphs: every state has one, and the
readers that wrote their own copies (and drifted) now show what the table says."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from rayflow.presentation import CATEGORIES, FAILED, LOOKS, UNKNOWN, category, clock, colour, look, took, when
from rayflow.states import FAILED_TYPES, StateType
from rayflow.store import RunStore
from rayflow.ui import create_app

BASE = "http://127.0.0.1:4200"


def test_every_state_type_has_a_presentation():
    assert set(LOOKS) == set(StateType)
    for state, found in LOOKS.items():
        assert found.category in CATEGORIES, state
        assert re.fullmatch(r"#[0-9a-f]{6}", found.colour), state
        assert found.style and len(found.symbol) == 1, state
    assert len({found.order for found in LOOKS.values()}) == len(LOOKS)  # a total order
    assert look("NO_SUCH_STATE") is UNKNOWN and look(None) is UNKNOWN
    assert look("CRASHED").category == "failed" and colour("CRASHED") != colour("NO_SUCH_STATE")


def test_what_states_mean_comes_from_rayflow_states():
    assert FAILED == {t.value for t in FAILED_TYPES}
    # how a state looks is another matter: CANCELLED counts as failed but is shown muted
    assert "CANCELLED" in FAILED and category("CANCELLED") == "muted"
    assert {category(t) for t in FAILED_TYPES - {StateType.CANCELLED}} == {"failed"}


def test_durations_and_times():
    assert took(1.0, 2.25) == "1.250s" and took(None, 2.0) == "-" and took(1.0, None) == "-"
    assert when(None) == "-" and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", when(0.0))
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", clock(1.5))


@pytest.fixture
def ui_home(tmp_path):
    rows = [
        (run_id, "f", "{}", state, "", 1_000.0, 1_001.5, "ab" * 16, '["t"]', 1)
        for run_id, state in (("run-cancelled", "CANCELLED"), ("run-crashed", "CRASHED"), ("run-timed-out", "TIMED_OUT"))
    ]
    RunStore(tmp_path).write(rows, [], [])
    return tmp_path


@pytest.mark.parametrize(
    "run_id,state,css", [("run-cancelled", "CANCELLED", "muted"), ("run-crashed", "CRASHED", "failed")]
)
def test_the_ui_shows_a_cancelled_run_muted_and_a_crashed_one_failed(ui_home, run_id, state, css):
    """The UI's own copy put CANCELLED in its failed branch first: its muted branch never ran."""
    client = TestClient(create_app(ui_home), base_url=BASE)
    page = client.get(f"/runs/{run_id}").text
    assert f'<span class="badge big {css}" id="run-state">{state}</span>' in page
    assert '<span class="num">1.500s</span><span class="label">duration</span>' in page
    listing = client.get("/runs").text
    assert f'<span class="badge {css}">{state}</span>' in listing


def test_a_timed_out_run_is_resumable_as_the_ui_offers(ui_home, monkeypatch):
    """The UI offered to resume every failed state; ``resume`` refused TIMED_OUT and TRIGGER_FAILED."""
    from rayflow.runs.resume import check_resumable

    monkeypatch.setenv("RAYFLOW_HOME", str(ui_home))
    _, run = check_resumable("run-timed-out")
    assert run["state"] == "TIMED_OUT"
