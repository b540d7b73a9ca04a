"""How long the ``rayflow`` command takes to start: ``--help`` and ``--version``, against a bare
``python -c pass``, each the min of several fresh processes.

    python benchmarks/cli_startup.py [--repeat 7]

Also lists the heavy modules ``rayflow --help`` loaded (ray, pyarrow, pydantic, rich, ...):
none should be, since the commands import them when they run.  The goal is a ``--help``
under 0.4 s on the development machine; this benchmark measures it, no test asserts it
(timings depend on the machine and its load).  Prints a table and one JSON object on the
last line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

HEAVY = ("ray", "pyarrow", "pydantic", "rich", "numpy", "pandas", "starlette", "jinja2", "cloudpickle", "opentelemetry")
CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -m rayflow --help": [sys.executable, "-m", "rayflow", "--help"],
    "python -m rayflow --version": [sys.executable, "-m", "rayflow", "--version"],
    "python -m rayflow runs --help": [sys.executable, "-m", "rayflow", "runs", "--help"],
}
PROBE = (
    "import sys; sys.argv = ['rayflow', '--help']\n"
    "try:\n    from rayflow.cli import main; main()\nexcept SystemExit:\n    pass\n"
    f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
)


def best_of(argv: list[str], repeat: int) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        code = done.returncode
    return min(times), code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    results = {name: best_of(argv, args.repeat) for name, argv in CASES.items()}
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    loaded = probe.stderr.strip().splitlines()[-1].split() if probe.stderr.strip() else []
    base = results["python -c pass"][0]
    print(f"{'command':<32} {'min s':>8} {'over python':>12} {'exit':>5}")
    for name, (seconds, code) in results.items():
        print(f"{name:<32} {seconds:>8.3f} {seconds - base:>12.3f} {code:>5}")
    print(f"heavy modules loaded by --help: {', '.join(loaded) or 'none'}")
    print(json.dumps({
        "benchmark": "cli_startup", "repeat": args.repeat,
        "seconds": {name: round(s, 4) for name, (s, _) in results.items()},
        "exit_codes": {name: code for name, (_, code) in results.items()},
        "heavy_modules_on_help": loaded,
    }))


if __name__ == "__main__":
    main()
