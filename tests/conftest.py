"""Shared fixtures: one Ray per test session (num_cpus=2), and the runners to test against; and the
tiers every test is marked with (tiers.py: unit, ray, cli, cluster; ``quick`` = unit and ray).

The semantic tests take the ``runner`` fixture and so run twice: with the
in-process engine runner ("local", no Ray) and on real Ray ("ray").
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys
import tempfile

import pytest

TESTS_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

# Ray workers are started from this process's environment: let them import the
# helper modules in tests/ (reference flows, picklable test classes).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(TESTS_DIR), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
)
# Run history goes to a scratch directory, never the user's ~/.rayflow.
os.environ.setdefault("RAYFLOW_HOME", str(pathlib.Path(tempfile.mkdtemp(prefix="rayflow-tests-"))))
if os.environ.get("PYTEST_XDIST_WORKER"):  # `-n 2`: each worker a history of its own (listings stay its own)
    os.environ["RAYFLOW_HOME"] = tempfile.mkdtemp(prefix=f"rayflow-tests-{os.environ['PYTEST_XDIST_WORKER']}-")
# A suite started in the background of a non-interactive shell (`pytest ... &`, `nohup`) inherits
# SIGINT ignored, and so would every process it starts: a Python that starts with SIGINT ignored
# never raises KeyboardInterrupt, and the Ctrl-C tests would wait for nothing.  A terminal's Ctrl-C
# reaches a process with the default disposition, which is what those tests stand for: restored
# here (a handled signal is reset to the default across exec, so children start as from a terminal).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

# The tiers (unit, ray, cli, cluster; quick): marked at collection, a unit test kept in process.
from tiers import pytest_collection_modifyitems, unit_tests_stay_in_process  # noqa: E402,F401


@pytest.fixture(scope="session")
def ray_session():
    """A local 2-CPU Ray for the whole session; yields the address other processes can join."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(params=["local", "ray"])
def runner(request):
    """The runner name; "ray" brings up the session's Ray."""
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    return request.param


_TOKEN_CLUSTER: list = []  # the session's token_cluster, once started


@pytest.fixture(scope="session")
def token_cluster():
    """A 2-CPU ``ray start --head`` cluster of its own that requires Ray's token authentication
    (its token is ``.token``), for the tests that join one by address: started once (~10 s),
    and stopped once the last test that uses it has run (``pytest_runtest_teardown``)."""
    import secrets

    from ray_cluster import RayCluster

    token = secrets.token_hex(32)
    with RayCluster(num_cpus=2, env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}) as cluster:
        cluster.token = token
        _TOKEN_CLUSTER.append(cluster)
        yield cluster


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """Stop the token cluster after the last test that uses it, not at the session's end: an idle
    cluster costs some 3% of a core, and the cluster tier runs minutes after its last user."""
    # (Under xdist a worker runs the files it is handed, in no order known here: the cluster stays up.)
    if _TOKEN_CLUSTER and "token_cluster" in item.fixturenames and not os.environ.get("PYTEST_XDIST_WORKER"):
        later = item.session.items[item.session.items.index(item) + 1:]
        if not any("token_cluster" in other.fixturenames for other in later):
            _TOKEN_CLUSTER.pop().stop()  # the fixture's own stop at the session's end does nothing then
