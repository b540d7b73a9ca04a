"""The tiers of tests/tiers.py: each test is marked by what it uses, and a unit mark cannot lie.

Each case runs a small test file in a pytest of its own (pytester, in this process) with the
suite's tier hooks, and reads its outcome.
"""

from __future__ import annotations

import pytest

CONFTEST = """
from tiers import pytest_collection_modifyitems, unit_tests_stay_in_process
"""
INI = """
[pytest]
markers =
    unit: u
    ray: r
    cli: c
    cluster: k
    quick: q
"""


@pytest.fixture
def suite(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    return pytester


def test_a_unit_test_that_spawns_a_process_fails_naming_its_tier(suite):
    suite.makepyfile(test_lying="""
        import subprocess, sys, pytest

        @pytest.mark.unit
        def test_spawns():
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        @pytest.mark.unit
        def test_stays_in_process():
            assert sum(range(4)) == 6
    """)
    result = suite.runpytest_inprocess("-q")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_spawns is marked 'unit' but spawns a subprocess: mark it @pytest.mark.cli*"])


def test_a_unit_test_that_starts_ray_fails_naming_its_tier(suite):
    suite.makepyfile(test_lying_ray="""
        import pytest, ray

        @pytest.mark.unit
        def test_starts_ray():
            ray.init(num_cpus=1)
    """)
    result = suite.runpytest_inprocess("-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_starts_ray is marked 'unit' but starts or joins Ray: mark it @pytest.mark.ray*"])


@pytest.mark.cli  # its inner cli test spawns a process for real
def test_the_process_guard_is_lifted_after_a_unit_test(suite):
    """The same spawn in a test marked cli runs (the guard is the unit tier's only)."""
    suite.makepyfile(test_after="""
        import subprocess, sys, pytest

        @pytest.mark.unit
        def test_first():
            pass

        @pytest.mark.cli
        def test_spawns():
            subprocess.run([sys.executable, "-c", "pass"], check=True)
    """)
    suite.runpytest_inprocess("-q").assert_outcomes(passed=2)


def test_tiers_come_from_the_fixtures_and_the_code_a_test_uses(suite):
    """Fixtures, the test's body and the helpers it calls decide; a written mark wins; unit and ray are quick."""
    suite.makeconftest(CONFTEST + """
import pytest

@pytest.fixture
def ray_session():
    return None

@pytest.fixture
def token_cluster():
    return None

@pytest.fixture
def spawned():
    import subprocess
    return subprocess
""")
    suite.makepyfile(test_sample="""
        import pytest

        def start(argv):
            import subprocess
            return subprocess.run(argv)

        def test_pure(): pass
        def test_on_ray(ray_session): pass
        def test_on_a_cluster(token_cluster): pass
        def test_through_a_helper(): start
        def test_through_a_fixture(spawned): pass
        @pytest.mark.cluster
        def test_written(): pass
    """)
    tiers = {}
    for tier in ("unit", "ray", "cli", "cluster", "quick"):
        listed = suite.runpytest_inprocess("--co", "-q", "-m", tier).stdout.lines
        tiers[tier] = sorted(line.split("::")[1] for line in listed if "::" in line)
    assert tiers == {
        "unit": ["test_pure"],
        "ray": ["test_on_ray"],
        "cli": ["test_through_a_fixture", "test_through_a_helper"],
        "cluster": ["test_on_a_cluster", "test_written"],
        "quick": ["test_on_ray", "test_pure"],
    }
