"""docker/: no Docker engine runs here, so check what can be checked.  The files parse; the
services, ports and volumes agree with each other and with the image; every `rayflow`
command they run parses with rayflow's own command line and its schedules load; the
comment at the top of the compose file walks through the README's commands."""

from __future__ import annotations

import pathlib
import re
import shlex
import sys

import pytest
import typer
import typer.main
import yaml

from rayflow.cli import app
from rayflow.cli.serve import config_entries

REPO = pathlib.Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (REPO / "docker" / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
SERVICES = COMPOSE["services"]
RAYFLOW_SERVICES = ("ray-head", "ray-worker", "rayflow-ui")


def parse_rayflow(argv: list[str]) -> dict:
    """The options `rayflow ARGV` would run with, parsed by rayflow's own command line (an
    unknown command or option, or a bad value, raises)."""
    group = typer.main.get_command(app)
    command = group.get_command(group.make_context("rayflow", ["--help"], resilient_parsing=True), argv[0])
    assert command is not None, f"rayflow has no command {argv[0]!r}"
    return command.make_context(argv[0], list(argv[1:])).params


def ui_script() -> list[list[str]]:
    """The commands of rayflow-ui's `sh -c` script, split at `&&`."""
    command = SERVICES["rayflow-ui"]["command"]
    assert command[:2] == ["sh", "-c"]
    return [shlex.split(part) for part in command[2].split("&&")]


def test_compose_has_the_cluster_the_scheduler_with_its_ui_and_jaeger():
    assert set(SERVICES) == {"jaeger", "ray-head", "ray-worker", "rayflow-ui"}
    assert SERVICES["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    jaeger_ports = {p.split(":")[1] for p in SERVICES["jaeger"]["ports"]}
    assert {"16686", "4317", "4318"} <= jaeger_ports
    assert "ports" not in SERVICES["ray-worker"]  # scalable: --scale ray-worker=N


def test_services_point_at_each_other_consistently():
    head = SERVICES["ray-head"]["command"]
    head_ports = {p.split(":")[1] for p in SERVICES["ray-head"]["ports"]}
    assert "--port=6379" in head and "6379" in head_ports
    assert "--ray-client-server-port=10001" in head and "10001" in head_ports
    assert "--dashboard-host=0.0.0.0" in head and "8265" in head_ports  # the job server `rayflow submit` uses
    assert "--address=ray-head:6379" in SERVICES["ray-worker"]["command"]
    ray_start, serve = ui_script()
    assert ray_start[:3] == ["env", "-u", "RAYFLOW_UI_TOKEN"]  # the node's Ray (its actors) never sees the UI's token
    ray_start = ray_start[3:]
    assert ray_start[:3] == ["ray", "start", "--address=ray-head:6379"] and "--num-cpus=0" in ray_start
    assert serve[0] == "exec" and serve[1] == "rayflow"
    options = parse_rayflow(serve[2:])
    assert options["address"] == "auto" and options["with_ui"] and options["ui_host"] == "0.0.0.0"
    assert f"127.0.0.1:{options['ui_port']}:{options['ui_port']}" in SERVICES["rayflow-ui"]["ports"]
    ui = SERVICES["rayflow-ui"]
    assert ui["restart"] == "on-failure"  # depends_on does not wait for the head's GCS
    grace = options["grace"] if options["grace"] is not None else 30.0  # serve's default
    assert int(ui["stop_grace_period"].rstrip("s")) > grace  # docker's SIGKILL comes after serve's grace
    for name in RAYFLOW_SERVICES:
        env = SERVICES[name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"  # Jaeger's OTLP/HTTP port
        assert SERVICES[name]["build"]["dockerfile"] == "docker/Dockerfile"


def test_the_head_and_the_ui_share_one_rayflow_home():
    """Submitted runs' drivers run on the head and record their history in its RAYFLOW_HOME;
    the UI reads the same volume, so it shows them with the scheduled runs."""
    home = re.search(r"^ENV RAYFLOW_HOME=(\S+)$", DOCKERFILE, re.M).group(1)
    mounts = {name: SERVICES[name].get("volumes", []) for name in ("ray-head", "rayflow-ui")}
    for name, volumes in mounts.items():
        assert f"rayflow-home:{home}" in volumes, name
    assert "rayflow-home" in COMPOSE["volumes"]
    assert 'mkdir -p "$RAYFLOW_HOME" && chmod 700 "$RAYFLOW_HOME"' in DOCKERFILE  # owned by the image's user


def test_the_schedules_the_ui_service_serves_load(monkeypatch):
    _, serve = ui_script()
    config = parse_rayflow(serve[2:])["config"]
    monkeypatch.chdir(REPO / "docker" / "..")  # the image's WORKDIR holds the same tree
    found, server = config_entries(config)
    assert [flow.name for flow, *_ in found] == ["daily"] and server["max_concurrent"] >= 1
    assert f"COPY --chown=ray:users {config} ./{config}" in DOCKERFILE


def test_the_image_copies_what_exists_and_installs_the_cluster_extra():
    for source in re.findall(r"^COPY --chown=\S+ (.+) \S+$", DOCKERFILE, re.M):
        for path in source.split():
            assert (REPO / path).exists(), path
    assert "FROM rayproject/ray:" in DOCKERFILE and "pip install --no-cache-dir '.[cluster]'" in DOCKERFILE
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r"^cluster = \[", pyproject, re.M)  # ray[default]: the job server on the head


def test_the_walkthrough_at_the_top_matches_the_readme():
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("<!-- walkthrough:start -->"):readme.index("<!-- walkthrough:end -->")]
    header = [line.lstrip("# ").strip() for line in COMPOSE_TEXT.splitlines() if line.startswith("#   ")]
    commands = [line for line in header if line.startswith(("export ", "docker compose", "rayflow "))]
    assert len(commands) == 4 and all(line in block.splitlines() for line in commands), commands
    for line in block.splitlines():
        if line.startswith("rayflow "):
            parse_rayflow(shlex.split(line)[1:])


def test_the_ui_listens_beyond_loopback_only_with_its_token(monkeypatch):
    """The UI binds the container's interfaces (published on loopback), so it needs a token:
    compose refuses to start without RAYFLOW_UI_TOKEN, and rayflow accepts the UI settings."""
    from rayflow.cli import _ui_settings

    env = SERVICES["rayflow-ui"]["environment"]
    assert env["RAYFLOW_UI_TOKEN"].startswith("${RAYFLOW_UI_TOKEN:?")
    assert "RAYFLOW_UI_TOKEN" not in SERVICES["ray-head"]["environment"]  # only the UI's container has it
    options = parse_rayflow(ui_script()[1][2:])
    monkeypatch.delenv("RAYFLOW_UI_TOKEN", raising=False)
    with pytest.raises(typer.Exit):  # as the service would start without the token
        _ui_settings(options["ui_host"], "--ui-host", options["ui_token_file"], options["ui_allowed_host"] or [])
    monkeypatch.setenv("RAYFLOW_UI_TOKEN", "a-token-of-thirty-two-characters")
    assert _ui_settings(options["ui_host"], "--ui-host", options["ui_token_file"], options["ui_allowed_host"] or []) == "a-token-of-thirty-two-characters"


def test_the_cluster_is_reachable_from_this_machine_only_and_asks_for_a_token():
    published = [(name, port) for name, service in SERVICES.items() for port in service.get("ports", [])]
    assert published and all(port.startswith("127.0.0.1:") for _, port in published), published
    for name in RAYFLOW_SERVICES:  # Ray's token authentication, never off
        env = SERVICES[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), name


@pytest.mark.parametrize("bad", [["serve", "--no-such-option"], ["submit", "x.py:f"]])
def test_parse_rayflow_rejects_what_rayflow_rejects(bad):
    usage_error = sys.modules[typer.BadParameter.__module__].UsageError  # the click typer runs on
    with pytest.raises(usage_error):  # so the checks above can fail
        parse_rayflow(bad)
