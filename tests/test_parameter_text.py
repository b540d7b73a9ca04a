"""Parameter text (issue 23, "rules that drifted"): one parser for every way a value arrives.

``-p name=value``, ``--params-json``, a ``flows.toml`` table and the UI's run-now form all go
through ``core.parameters.parameter_values``: the flow's pydantic model decides, per field,
whether text is JSON.  A ``str`` (or a secret) stays the text typed; an int, float, bool, list,
dict or model field is JSON where it parses, else the text, which validation refuses naming the
field.  Typed values (JSON, TOML) are taken as they are.  Before, the UI's form JSON-parsed every
field, so "2024" typed for a ``str`` parameter arrived as an int and pydantic refused it.
"""

from __future__ import annotations

import enum
import pathlib
import textwrap

import pytest
from starlette.testclient import TestClient
from ui_http import csrf_token
from waiting import wait_for

from rayflow.store import RunStore
from rayflow.ui import create_app

BASE = "http://127.0.0.1"


class Colour(str, enum.Enum):
    ONE = "1"
    TWO = "2"

FLOW = textwrap.dedent(
    """
    import rayflow as rf

    @rf.flow(runner="local")
    def dated(year: str, n: int = 1, tags: list[str] = [], on: bool = False, label: str = "2024"):
        return year
    """
)
# the same parameters, as each source gives them
PAIRS = ["year=2024", "n=7", 'tags=["a", "b"]', "on=true"]
EXPECTED = {"year": "2024", "n": 7, "tags": ["a", "b"], "on": True, "label": "2024"}


@pytest.fixture
def dated(tmp_path):
    from rayflow.cli.loader import load_flow

    path = tmp_path / "dated_flow.py"
    path.write_text(FLOW)
    return f"{path}:dated", load_flow(f"{path}:dated")


def test_the_ui_run_now_form_reads_a_str_parameter_as_its_text(dated, tmp_path, monkeypatch):
    """Failed before with 400 "invalid parameters for flow 'dated': year: Input should be a valid
    string (got 2024)": the form JSON-parsed "2024" into an int."""
    from rayflow.ui.actions import ServeActions

    _, flow = dated
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    client = TestClient(create_app(tmp_path, ServeActions([flow])), base_url=BASE, follow_redirects=False)
    token = {"csrf_token": csrf_token(client.get("/flows").text)}
    form = dict(pair.split("=", 1) for pair in PAIRS)
    started = client.post("/flows/dated/run", data={**form, **token})
    assert started.status_code == 303, started.text
    run_id = started.headers["location"].rsplit("/", 1)[1]
    store = RunStore(tmp_path)
    wait_for(lambda: (store.run(run_id) or {}).get("state") == "SUCCESS")
    assert store.run(run_id)["params"] == EXPECTED
    bad = client.post("/flows/dated/run", data={"year": "2024", "n": "lots", **token})
    assert bad.status_code == 400 and "n: Input should be a valid integer" in bad.text


def test_the_form_shows_each_default_as_the_text_that_reads_back_as_it(dated):
    """A str default is shown as it is (was JSON: "2024" in quotes), and reads back unchanged."""
    from rayflow.core.parameters import parameter_values
    from rayflow.ui.actions import ServeActions

    _, flow = dated
    shown = ServeActions([flow]).parameters("dated")
    assert shown == {"year": ("", True), "n": ("1", False), "tags": ("[]", False), "on": ("false", False), "label": ("2024", False)}
    texts = {name: text for name, (text, _) in shown.items() if text}
    assert parameter_values(flow.parameters_model, text=texts) == {"n": 1, "tags": [], "on": False, "label": "2024"}


def test_p_params_json_flows_toml_and_the_form_give_the_same_parameters(dated, tmp_path):
    from rayflow.cli import parse_params
    from rayflow.cli.serve import config_entries
    from rayflow.core.parameters import parameter_values

    target, flow = dated
    model = flow.parameters_model
    from_p = parse_params(PAIRS, None, model)
    from_json = parse_params([], '{"year": "2024", "n": 7, "tags": ["a", "b"], "on": true}', model)
    from_form = parameter_values(model, text=dict(pair.split("=", 1) for pair in PAIRS))
    config = tmp_path / "flows.toml"
    config.write_text(
        f'[[flow]]\ntarget = "{target}"\ninterval = 60\n'
        'parameters = { year = "2024", n = 7, tags = ["a", "b"], on = true }\n'
    )
    (_, schedule, _, _), = config_entries(str(config))[0]
    from_toml = dict(schedule.parameters)
    assert from_p == from_json == from_form == from_toml == {"year": "2024", "n": 7, "tags": ["a", "b"], "on": True}
    assert flow.validate(from_p) == EXPECTED
    # -p over --params-json, by the same rule
    assert parse_params(["year=1999"], '{"year": "2024", "n": 7}', model) == {"year": "1999", "n": 7}


def test_text_is_json_only_where_the_field_is_not_text():
    import typing

    import pydantic

    from rayflow.core.parameters import value_from_text

    assert value_from_text(str, "2024") == "2024" and value_from_text(typing.Optional[str], "null") == "null"
    assert value_from_text(pydantic.SecretStr, "0123") == "0123"
    assert value_from_text(int, "2024") == 2024 and value_from_text(float, "1.5") == 1.5
    assert value_from_text(dict[str, int], '{"a": 1}') == {"a": 1} and value_from_text(bool, "true") is True
    assert value_from_text(typing.Any, "5") == 5  # an unannotated parameter: JSON where it parses
    assert value_from_text(typing.Literal["2024", "2025"], "2024") == "2024" and value_from_text(typing.Literal[1, 2], "1") == 1
    assert value_from_text(pathlib.Path, "2024") == "2024" and value_from_text(Colour, "1") == "1"
    assert value_from_text(list[str], '["a"]') == ["a"] and value_from_text(typing.Optional[int], "3") == 3
    assert value_from_text(int, "lots") == "lots"  # left for validation, which names the field


def test_a_bad_value_typed_as_text_is_refused_naming_its_field(dated):
    from rayflow.core.parameters import parameter_values
    from rayflow.exceptions import ParameterError

    _, flow = dated
    with pytest.raises(ParameterError, match=r"tags: Input should be a valid list \(got 'a,b'\)"):
        flow.validate(parameter_values(flow.parameters_model, text={"year": "2024", "tags": "a,b"}))


RESUMABLE = textwrap.dedent(
    """
    import os
    import rayflow as rf

    @rf.task
    def stamp(year):
        if os.path.exists(os.environ["STAMP_FAIL"]):
            raise RuntimeError("not yet")
        return year

    @rf.flow(runner="local")
    def stamped(year: str):
        return stamp(year)
    """
)


def test_resume_p_reads_a_str_parameter_as_its_text(tmp_path):
    """`rayflow resume ID -p year=2024`: failed before with exit 2 "invalid parameters for flow
    'stamped': year: Input should be a valid string (got 2024)" (resume parsed -p with no model)."""
    from cli_runner import run_cli

    flow_file = tmp_path / "stamped_flow.py"
    flow_file.write_text(RESUMABLE)
    gate = tmp_path / "fail"
    gate.write_text("")
    home = tmp_path / "home"
    first = run_cli("run", f"{flow_file}:stamped", "-p", "year=2023", "--run-id", "stamped-1", "--local", home=home, STAMP_FAIL=str(gate))
    assert first.returncode == 1, first.stderr
    gate.unlink()
    again = run_cli("resume", "stamped-1", "-p", "year=2024", "--local", home=home, STAMP_FAIL=str(gate))
    assert again.returncode == 0, again.stderr
    assert RunStore(home).run("stamped-1")["params"] == {"year": "2024"}
