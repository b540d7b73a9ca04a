"""Run-id format (issue 23, "rules that drifted"): a generated run id is made by one function,
``rayflow.paths.new_run_id``, next to the rule every run id follows (``check_run_id``).  Before,
three places made one each (engine/driver/local.new_run_id, serving/server.Server.new_run_id,
the UI's run-now ``uuid4().hex[:12]``)."""

from __future__ import annotations

import pathlib
import re

import pytest
from waiting import wait_for

ROOT = pathlib.Path(__file__).resolve().parent.parent / "rayflow"


def test_a_generated_run_id_follows_the_rule_and_differs_each_time():
    from rayflow.paths import check_run_id, new_run_id

    ids = {new_run_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(check_run_id(i) == i and re.fullmatch(r"[0-9a-f]{12}", i) for i in ids)


def test_every_generator_is_the_one_function():
    """Failed before: ImportError (no rayflow.paths.new_run_id); the server's default was a lambda of its own."""
    import dataclasses

    from rayflow.engine.driver import local
    from rayflow.paths import new_run_id
    from rayflow.serving.server import Server

    default = {f.name: f.default for f in dataclasses.fields(Server)}["new_run_id"]
    assert default is new_run_id and not hasattr(local, "new_run_id")


def test_the_ui_run_now_takes_its_id_from_the_one_function(tmp_path, monkeypatch):
    """Failed before: the UI's run now made its own (uuid4().hex[:12]), so this id was not used."""
    import rayflow as rf
    from rayflow.ui import actions

    @rf.flow(runner="local")
    def quick(n: int = 1):
        return n

    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    monkeypatch.setattr(actions, "new_run_id", lambda: "from-the-one-function", raising=False)
    serve = actions.ServeActions([quick])
    assert serve.run_now("quick", {}) == "from-the-one-function"
    wait_for(lambda: all(h.done() for h in serve.handles))


def test_no_module_makes_a_run_id_of_its_own():
    makers = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in sorted(ROOT.rglob("*.py"))
        if p.name != "paths.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"run_id.*uuid\.uuid4\(\)\.hex\[:12\]|def new_run_id", line)
    ]
    assert makers == []


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
