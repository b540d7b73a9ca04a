"""docker/: no Docker engine runs here, so check what can be checked: the files parse,
services and ports are consistent, and the commands the images run exist."""

from __future__ import annotations

import pathlib
import shlex
import subprocess
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()


def test_compose_has_the_cluster_and_jaeger():
    services = COMPOSE["services"]
    assert {"jaeger", "ray-head", "ray-worker", "flow"} <= set(services)
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    jaeger_ports = {p.split(":")[1] for p in services["jaeger"]["ports"]}
    assert {"16686", "4317", "4318"} <= jaeger_ports
    assert "ports" not in services["ray-worker"]  # scalable: --scale ray-worker=N


def test_services_point_at_each_other_consistently():
    services = COMPOSE["services"]
    head_ports = {p.split(":")[1] for p in services["ray-head"]["ports"]}
    assert "--port=6379" in services["ray-head"]["command"] and "6379" in head_ports
    assert "--ray-client-server-port=10001" in services["ray-head"]["command"] and "10001" in head_ports
    assert "--address=ray-head:6379" in services["ray-worker"]["command"]
    flow = services["flow"]
    assert "--address ray-head:6379" in flow["command"]
    for name in ("ray-head", "ray-worker", "flow"):
        env = services[name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"  # Jaeger's OTLP/HTTP port
    assert services["ray-head"]["build"]["dockerfile"] == "docker/Dockerfile"


def test_the_commands_the_images_run_exist():
    flow_command = shlex.split(COMPOSE["services"]["flow"]["command"])
    assert flow_command[:2] == ["rayflow", "run"]
    target = flow_command[2]
    assert (REPO / target.split(":")[0]).is_file()
    out = subprocess.run([sys.executable, "-m", "rayflow", "graph", target], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr  # the target loads and names a flow
    out = subprocess.run([sys.executable, "-m", "rayflow", "run", "--help"], capture_output=True, text=True)
    assert "--address" in out.stdout and "--param" in out.stdout
    assert 'CMD ["rayflow", "--help"]' in DOCKERFILE
    assert "FROM rayproject/ray:" in DOCKERFILE and "pip install --no-cache-dir ." in DOCKERFILE
    for copied in ("pyproject.toml", "README.md", "rayflow", "examples"):
        assert (REPO / copied).exists()


def test_the_cluster_is_reachable_from_this_machine_only_and_asks_for_a_token():
    services = COMPOSE["services"]
    published = [(name, port) for name, service in services.items() for port in service.get("ports", [])]
    assert published and all(port.startswith("127.0.0.1:") for _, port in published), published
    for name in ("ray-head", "ray-worker", "flow"):  # Ray's token authentication, never off
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), name
