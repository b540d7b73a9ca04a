"""How long each ``rayflow`` command takes a person at the command line, start to end (or, for
``ui``, to listening), against a bare ``python -c pass``: each the min of several fresh processes.

    python benchmarks/cli_startup.py [--repeat 7] [--baseline DIR] [--address HOST:PORT]

The commands: ``--help``, ``--version``, ``runs --help``; ``runs``, ``runs --json``, ``show``,
``logs``, ``graph`` (of a flow file, and ``--run`` of a run), ``approve`` (of a task that is not
paused: refused, exit 2), ``run --local`` of a two-task flow, over a run history made first in
a temporary RAYFLOW_HOME; ``ui`` until its port accepts a connection.  With ``--address`` (a
running Ray cluster, e.g. after ``ray start --head``): ``run`` of the flow on it, ``cancel`` of
a run it does not have (exit 1), and ``serve --ui`` until the UI listens.

``--baseline DIR``: a source tree of another rayflow (``git archive REV rayflow | tar -x -C
DIR``), timed in the same run, each command alternately with this tree (both through
PYTHONPATH, with this checkout's installed dependencies): before/after from one machine state.
The children write bytecode caches (PYTHONDONTWRITEBYTECODE is dropped, as a user's Python does)
and each command runs once unmeasured first.  Each one-shot command also has its CPU seconds (user +
system of the process, min of the repetitions): steadier than wall time on a loaded machine.  Also lists the heavy modules ``--help`` and the
history commands load (none should be).  No test asserts a time: timings depend on the machine
and its load.  Prints a table and one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import socket
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
HEAVY = ("ray", "pyarrow", "pydantic", "rich", "numpy", "pandas", "starlette", "jinja2", "cloudpickle",
         "opentelemetry", "asyncio")
FLOW = '''
import rayflow as rf


@rf.task
def inc(x: int) -> int:
    return x + 1


@rf.flow
def small(n: int = 3) -> int:
    return inc(inc(n))
'''
SERVE_TOML = '''
[[flow]]
target = "flows.py:small"
interval = 3600
'''
RF = [sys.executable, "-m", "rayflow"]
PROBE = (
    "import sys, runpy\nsys.argv = ['rayflow', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('rayflow', run_name='__main__')\nexcept SystemExit:\n    pass\n"
    f"print('HEAVY', ' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
)


def cases(address: str | None) -> dict[str, list[str]]:
    found = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "--help": [*RF, "--help"],
        "--version": [*RF, "--version"],
        "runs --help": [*RF, "runs", "--help"],
        "runs": [*RF, "runs"],
        "runs --json": [*RF, "runs", "--json"],
        "show RUN": [*RF, "show", "bench-1"],
        "logs RUN": [*RF, "logs", "bench-1"],
        "graph flows.py:small": [*RF, "graph", "flows.py:small"],
        "graph --run RUN": [*RF, "graph", "--run", "bench-1"],
        "approve RUN TASK (not paused)": [*RF, "approve", "bench-1", "inc"],
        "run --local (2 tasks)": [*RF, "run", "flows.py:small", "--local"],
    }
    if address:
        found["run --address (2 tasks)"] = [*RF, "run", "flows.py:small", "--address", address]
        found["cancel (no such run)"] = [*RF, "cancel", "no-such-run", "--address", address, "--wait", "1"]
    return found


def environment(tree: pathlib.Path, home: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "RAY_ADDRESS")}
    return {**env, "PYTHONPATH": str(tree), "RAYFLOW_HOME": str(home), "COLUMNS": "200"}


def once(argv: list[str], env: dict[str, str], cwd: pathlib.Path) -> tuple[float, int, float]:
    """Wall seconds, exit code, and the CPU seconds the command used (user + system: steadier
    than wall time on a loaded machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd, timeout=300)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, done.returncode, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until_listening(argv: list[str], port: int, env: dict[str, str], cwd: pathlib.Path) -> tuple[float, int]:
    """Seconds from the start of ``argv`` to its port accepting a connection; then it is stopped."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    try:
        while time.perf_counter() - start < 120:
            if proc.poll() is not None:
                return time.perf_counter() - start, proc.returncode
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return time.perf_counter() - start, 0
            time.sleep(0.005)
        return time.perf_counter() - start, -1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def listening_cases(address: str | None) -> dict[str, object]:
    found: dict[str, object] = {"ui (to listening)": lambda port: [*RF, "ui", "--port", str(port)]}
    if address:
        found["serve --ui (to listening)"] = lambda port: [
            *RF, "serve", "--config", "serve.toml", "--address", address, "--ui", "--ui-port", str(port)]
    return found


def heavy_loaded(argv: list[str], env: dict[str, str], cwd: pathlib.Path) -> list[str]:
    probe = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, cwd=cwd)
    line = [x for x in probe.stderr.splitlines() if x.startswith("HEAVY")]
    return line[-1].split()[1:] if line else ["(probe failed)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--baseline", help="a source tree of another rayflow, timed alongside")
    parser.add_argument("--address", help="a running Ray cluster: run, cancel and serve are timed on it")
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="cli-startup-"))
    (work / "flows.py").write_text(FLOW)
    (work / "serve.toml").write_text(SERVE_TOML)
    trees = {"now": REPO, **({"baseline": pathlib.Path(args.baseline).resolve()} if args.baseline else {})}
    envs = {}
    for name, tree in trees.items():  # each tree its own history, made by itself (its schema)
        home = work / f"home-{name}"
        envs[name] = env = environment(tree, home)
        made = subprocess.run([*RF, "run", "flows.py:small", "--local", "--run-id", "bench-1"], capture_output=True,
                              text=True, env=env, cwd=work)
        assert made.returncode == 0, made.stderr
    results: dict[str, dict[str, tuple]] = {}
    cpu: dict[str, dict[str, float]] = {}  # the one-shot commands' CPU seconds, min of the repetitions
    for case, argv in cases(args.address).items():
        times: dict[str, list[tuple[float, int, float]]] = {name: [] for name in trees}
        for name in trees:
            once(argv, envs[name], work)  # warm: bytecode caches written, files in the page cache
        for _ in range(args.repeat):
            for name in trees:  # alternately: the same load for both
                times[name].append(once(argv, envs[name], work))
        results[case] = {name: min(t) for name, t in times.items()}
        cpu[case] = {name: min(x[2] for x in t) for name, t in times.items()}
    for case, make in listening_cases(args.address).items():
        times = {name: [] for name in trees}
        for _ in range(max(2, args.repeat // 2) + 1):
            for name in trees:
                port = free_port()
                times[name].append(until_listening(make(port), port, envs[name], work))
        results[case] = {name: min(t[1:]) for name, t in times.items()}  # the first one warms
    heavy = {name: {case: heavy_loaded(argv, envs[name], work) for case, argv in
                    (("--help", ["--help"]), ("runs", ["runs"]), ("show RUN", ["show", "bench-1"]))} for name in trees}
    base = {name: results["python -c pass"][name][0] for name in trees}
    header = f"{'command':<32}" + "".join(f"{name + ' min s':>16}{'cpu s':>8}{'exit':>5}" for name in trees)
    print(header + (f"{'now/baseline':>14}{'cpu':>6}" if args.baseline else ""))
    for case, by_tree in results.items():
        used = cpu.get(case, {})
        line = f"{case:<32}" + "".join(
            f"{by_tree[n][0]:>16.3f}{used[n] if n in used else float('nan'):>8.3f}{by_tree[n][1]:>5}" for n in trees)
        if args.baseline:
            line += f"{by_tree['now'][0] / by_tree['baseline'][0]:>14.2f}"
            line += f"{used['now'] / used['baseline']:>6.2f}" if used else ""
        print(line)
    for name in trees:
        print(f"heavy modules loaded ({name}): " + "; ".join(f"{c}: {', '.join(m) or 'none'}" for c, m in heavy[name].items()))
    print(json.dumps({
        "benchmark": "cli_startup", "repeat": args.repeat, "python_s": {n: round(s, 4) for n, s in base.items()},
        "seconds": {case: {n: round(t[0], 4) for n, t in by_tree.items()} for case, by_tree in results.items()},
        "cpu_seconds": {case: {n: round(c, 4) for n, c in by_tree.items()} for case, by_tree in cpu.items()},
        "exit_codes": {case: {n: t[1] for n, t in by_tree.items()} for case, by_tree in results.items()},
        "heavy_modules": heavy,
    }))


if __name__ == "__main__":
    main()
