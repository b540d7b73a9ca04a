"""Joining a ``ray start`` cluster that requires Ray's token authentication.

Ray itself answers a missing or wrong token by retrying for ~20 s and then
"Failed to connect"; rayflow says that a token is needed and how to give it.
Every client runs in a subprocess whose environment has no RAY_AUTH_* and whose
HOME is an empty folder, so no ``~/.ray/auth_token`` is found unless put there.
The cluster is the session's ``token_cluster`` (conftest.py), its token ``token_cluster.token``.
"""

from __future__ import annotations

import concurrent.futures
import pathlib
import secrets
import subprocess
import sys

import pytest
from ray_cluster import RayCluster, clean_env

REPO = pathlib.Path(__file__).resolve().parent.parent
QUICKSTART = str(REPO / "examples" / "quickstart.py")

CONNECT = """
import sys
from rayflow.runtime import connect
try:
    connect(sys.argv[1])
except Exception as exc:
    print(type(exc).__name__, exc, sep="|")
else:
    print("connected")
"""

pytestmark = pytest.mark.timeout(180)


def _connect(cluster: RayCluster, home: pathlib.Path, **env: str) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", CONNECT, cluster.address], capture_output=True, text=True, timeout=90,
        env=clean_env(home, **env), cwd=REPO,
    )
    kind, _, message = out.stdout.strip().splitlines()[-1].partition("|")
    return kind, message


def _rayflow(cluster: RayCluster, tmp_path: pathlib.Path, **env: str) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "rayflow", "run", f"{QUICKSTART}:etl", "-p", "days=1", "--address", cluster.address],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env=clean_env(home, RAYFLOW_HOME=str(tmp_path / "rayflow-home"), **env),
    )


@pytest.fixture(scope="module")
def clients(token_cluster, tmp_path_factory) -> dict:
    """Every client process of this module, run at once (each is seconds of start-up and of
    waiting on the cluster): by name, a `rayflow run`'s CompletedProcess or a connect's
    (kind, message).  Each has a HOME of its own; only ``token file in HOME`` has a token there."""
    calls = {
        "cli without a token": lambda home: _rayflow(token_cluster, home),
        "cli with a token": lambda home: _rayflow(token_cluster, home, RAY_AUTH_MODE="token",
                                                  RAY_AUTH_TOKEN_PATH=str(home / "token")),
        "token without token mode": lambda home: _connect(token_cluster, home, RAY_AUTH_TOKEN=token_cluster.token),
        "token mode without a token": lambda home: _connect(token_cluster, home, RAY_AUTH_MODE="token"),
        "a wrong token": lambda home: _connect(token_cluster, home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32)),
        "token file in HOME": lambda home: _connect(token_cluster, home, RAY_AUTH_MODE="token"),
    }
    homes = {name: tmp_path_factory.mktemp("client") for name in calls}
    (homes["cli with a token"] / "token").write_text(token_cluster.token)
    (homes["token file in HOME"] / ".ray").mkdir()
    (homes["token file in HOME"] / ".ray" / "auth_token").write_text(token_cluster.token)
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        done = {name: pool.submit(call, homes[name]) for name, call in calls.items()}
        return {name: future.result() for name, future in done.items()}


def test_the_cli_without_a_token_says_one_is_needed_in_one_line(token_cluster, clients):
    out = clients["cli without a token"]
    assert out.returncode == 3, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0] == (
        f"error: the Ray cluster at '{token_cluster.address}' requires token authentication and this process sent no "
        "token: set RAY_AUTH_MODE=token and give the cluster's token in RAY_AUTH_TOKEN, a file named by "
        "RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (see https://docs.ray.io/en/latest/ray-security/token-auth.html)"
    )


def test_the_cli_with_the_token_runs(clients):
    out = clients["cli with a token"]
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "state: SUCCESS" in out.stdout and '"rows": 20' in out.stdout, out.stdout


def test_each_way_of_missing_the_token_is_named(clients):
    kind, message = clients["token without token mode"]
    assert kind == "ClusterAuthenticationError"
    assert "sent no token" in message and "a token is in RAY_AUTH_TOKEN, but Ray sends it only when RAY_AUTH_MODE=token" in message

    kind, message = clients["token mode without a token"]
    assert kind == "ClusterAuthenticationError"
    assert "requires token authentication and no token was found: give the cluster's token in RAY_AUTH_TOKEN" in message

    kind, message = clients["a wrong token"]
    assert kind == "ClusterAuthenticationError"
    assert "rejected the token from RAY_AUTH_TOKEN: use the token the cluster was started with" in message

    assert clients["token file in HOME"] == ("connected", "")
