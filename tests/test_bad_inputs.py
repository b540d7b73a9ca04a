"""Every bad input is answered in one line: the table in docs/bad-inputs.md, kept true here.

Each command-line case runs ``rayflow`` and must exit with its documented code, print exactly
one line (``error: ...``) on stderr, nothing on stdout, and no traceback.  A case refused before
any work that needs no process of its own (``in_process``: no Ray, no server, no job client)
runs ``rayflow.cli.main`` in this process; the others run ``python -m rayflow`` as a user would; each Python case must raise its documented exception.  The messages, with temporary
paths written ``<dir>``, must be the ones in the doc's tables.  With
``RAYFLOW_REGENERATE_DOCS=1`` the test rewrites the tables, and fails if that changed them
(read the diff, then run it again without the variable).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cli_runner import run_cli_in_process
from pydantic import SecretStr

import rayflow as rf

REPO = pathlib.Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "bad-inputs.md"
CLOSED = "127.0.0.1:9"  # nothing listens on the discard port: joins fail at once

GOOD = '''
import rayflow as rf

@rf.task
def double(x: int) -> int:
    return 2 * x

@rf.flow
def twice(n: int = 1) -> int:
    return double(n)

@rf.flow
def needs(day: str, n: int) -> int:
    return double(n)

def plain():
    return 1
'''

# (bad input, argv, RAYFLOW_HOME: "home" | "file" | "corrupt", exit code).  <dir> is a scratch folder.
CLI_CASES: list[tuple[str, list[str], str, int]] = [
    ("target without `:flow`", ["run", "<dir>/good.py", "--local"], "home", 2),
    ("target file missing", ["run", "<dir>/nofile.py:twice", "--local"], "home", 2),
    ("target file with a syntax error", ["run", "<dir>/syntax.py:flow", "--local"], "home", 2),
    ("target file whose import raises", ["run", "<dir>/failing.py:flow", "--local"], "home", 2),
    ("target file importing a missing package", ["run", "<dir>/missing_dep.py:flow", "--local"], "home", 2),
    ("target module missing", ["run", "no_such_module_here:flow", "--local"], "home", 2),
    ("flow name not in the file", ["run", "<dir>/good.py:nope", "--local"], "home", 2),
    ("target not a flow", ["run", "<dir>/good.py:plain", "--local"], "home", 2),
    ("parameter of the wrong type", ["run", "<dir>/good.py:twice", "-p", "n=lots", "--local"], "home", 2),
    ("unknown parameter", ["run", "<dir>/good.py:twice", "-p", "colour=red", "--local"], "home", 2),
    ("required parameters missing", ["run", "<dir>/good.py:needs", "--local"], "home", 2),
    ("`--param` without `=`", ["run", "<dir>/good.py:twice", "-p", "nonsense", "--local"], "home", 2),
    ("`--params-json` not JSON", ["run", "<dir>/good.py:twice", "--params-json", "{n: 1}", "--local"], "home", 2),
    ("`--params-json` not an object", ["run", "<dir>/good.py:twice", "--params-json", "[1, 2]", "--local"], "home", 2),
    ("`--run-id` of a recorded run", ["run", "<dir>/good.py:twice", "--run-id", "taken-1", "--local"], "home", 2),
    ("`--run-id` outside the run id rule: a path", ["run", "<dir>/good.py:twice", "--run-id", "../../../escape1", "--local"], "home", 2),
    ("`--run-id` outside the run id rule: a space", ["run", "<dir>/good.py:twice", "--run-id", " ", "--local"], "home", 2),
    ("`--run-id` outside the run id rule: markup", ["run", "<dir>/good.py:twice", "--run-id", "<b>x</b>", "--local"], "home", 2),
    ("`--run-id` outside the run id rule: a dot first", ["run", "<dir>/good.py:twice", "--run-id", ".hidden", "--local"], "home", 2),
    ("`--address` where no Ray listens", ["run", "<dir>/good.py:twice", "--address", CLOSED], "home", 3),
    ("unknown option", ["run", "<dir>/good.py:twice", "--bogus"], "home", 2),
    ("missing argument", ["run"], "home", 2),
    ("unknown command", ["bogus"], "home", 2),
    ("option value out of range", ["ui", "--port", "0"], "home", 2),
    ("`ui` beyond loopback without a token", ["ui", "--host", "0.0.0.0"], "home", 2),
    ("`serve --ui` beyond loopback without a token",
     ["serve", "<dir>/good.py:twice", "--cron", "0 6 * * *", "--ui", "--ui-host", "0.0.0.0"], "home", 2),
    ("`ui --token-file` missing", ["ui", "--token-file", "<dir>/nofile.token"], "home", 2),
    ("`ui --token-file` empty", ["ui", "--token-file", "<dir>/empty.token"], "home", 2),
    ("`ui --token-file` with a short token", ["ui", "--token-file", "<dir>/short.token"], "home", 2),
    ("`ui --token-file` with two tokens", ["ui", "--token-file", "<dir>/two.token"], "home", 2),
    ("`serve --ui --token-file` missing",
     ["serve", "<dir>/good.py:twice", "--cron", "0 6 * * *", "--ui", "--token-file", "<dir>/nofile.token"], "home", 2),
    ("`ui --allowed-host` with a port", ["ui", "--allowed-host", "example.org:4200"], "home", 2),
    ("`ui --allowed-host` a wildcard over a top-level domain", ["ui", "--allowed-host", "*.com"], "home", 2),
    ("`submit --serve --ui` beyond loopback without a token file",
     ["submit", "--serve", "flows.toml", "--ui", "--ui-host", "0.0.0.0", "--address", f"http://{CLOSED}"], "home", 2),
    ("option value of the wrong type", ["runs", "--limit", "many"], "home", 2),
    ("`runs --state` not a state", ["runs", "--state", "DONE"], "home", 2),
    ("`show --state` not a state", ["show", "taken-1", "--state", "DONE"], "home", 2),
    ("`RAYFLOW_HOME` is a file", ["runs"], "file", 2),
    ("`history.db` damaged: `runs`", ["runs"], "corrupt", 2),
    ("`history.db` damaged: `show`", ["show", "some-run"], "corrupt", 2),
    ("`history.db` damaged: `logs`", ["logs", "some-run"], "corrupt", 2),
    ("`history.db` damaged: `schedules`", ["schedules"], "corrupt", 2),
    ("unknown run id: `show`", ["show", "no-such-run"], "home", 1),
    ("unknown run id: `logs`", ["logs", "no-such-run"], "home", 1),
    ("unknown run id: `graph --run`", ["graph", "--run", "no-such-run"], "home", 1),
    ("unknown run id: `resume`", ["resume", "no-such-run"], "home", 1),
    ("unknown run id: `cancel`, cluster unreachable", ["cancel", "no-such-run"], "home", 3),
    ("unknown run id: `artifacts ls --run`", ["artifacts", "ls", "--run", "no-such-run"], "home", 1),
    ("unknown key: `artifacts ls --key`", ["artifacts", "ls", "--key", "no-such-key"], "home", 1),
    ("unknown key: `artifacts show`", ["artifacts", "show", "no-such-key"], "home", 1),
    ("`artifacts ls --limit` of 0", ["artifacts", "ls", "--limit", "0"], "home", 2),
    ("`artifacts ls --limit` past its maximum", ["artifacts", "ls", "--limit", "99999999999999999999"], "home", 2),
    ("`artifacts show --version` of 0", ["artifacts", "show", "some-key", "--version", "0"], "home", 2),
    ("`artifacts show --version` past its maximum", ["artifacts", "show", "some-key", "--version", "99999999999999999999"], "home", 2),
    ("`artifacts show --version` not a number", ["artifacts", "show", "some-key", "--version", "latest"], "home", 2),
    ("`history.db` damaged: `artifacts ls`", ["artifacts", "ls"], "corrupt", 2),
    ("resume of a run that succeeded", ["resume", "taken-1"], "home", 2),
    ("resume of a run id outside the run id rule", ["resume", "a/b"], "home", 2),
    ("resume of a run whose module target is not in the current directory", ["resume", "moved-1"], "home", 2),
    ("unknown run id: `approve`", ["approve", "no-such-run", "double"], "home", 1),
    ("`approve` of an unknown task", ["approve", "taken-1", "nope"], "home", 2),
    ("`approve` of a task that is not paused", ["approve", "taken-1", "double"], "home", 2),
    ("`approve --input` not JSON", ["approve", "taken-1", "double", "--input", "{bad"], "home", 2),
    ("`approve -p` not name=value", ["approve", "taken-1", "double", "-p", "amount"], "home", 2),
    ("`reject` without `--reason`", ["reject", "taken-1", "double"], "home", 2),
    ("`reject` of a task that is not paused", ["reject", "taken-1", "double", "--reason", "no"], "home", 2),
    ("`approve --address` not a job server URL", ["approve", "some-run", "ship", "--address", CLOSED], "home", 2),
    ("`reject --address`: no job server at the address",
     ["reject", "some-run", "ship", "--reason", "no", "--address", f"http://{CLOSED}"], "home", 3),
    ("`approve --address --working-dir` not a folder",
     ["approve", "some-run", "ship", "--address", f"http://{CLOSED}", "--working-dir", "<dir>/nowhere"], "home", 2),
    ("`graph` with neither target nor run", ["graph"], "home", 2),
    ("`graph --format` unknown", ["graph", "<dir>/good.py:twice", "--format", "png"], "home", 2),
    ("bad cron expression", ["schedule", "preview", "<dir>/good.py:twice", "--cron", "61 * * * *"], "home", 2),
    ("unknown timezone", ["schedule", "preview", "<dir>/good.py:twice", "--cron", "0 6 * * *", "--timezone", "Mars/Base"], "home", 2),
    ("neither `--cron` nor `--interval`", ["schedule", "preview", "<dir>/good.py:twice"], "home", 2),
    ("negative `--interval`", ["schedule", "preview", "<dir>/good.py:twice", "--interval", "-5"], "home", 2),
    ("`--interval` under a second", ["serve", "<dir>/good.py:twice", "--interval", "0.001"], "home", 2),
    ("`interval` under a second in a `flows.toml`", ["serve", "--config", "<dir>/fast.toml"], "home", 2),
    ("`schedule preview -n` over its maximum",
     ["schedule", "preview", "<dir>/good.py:twice", "--interval", "60", "-n", "100000000"], "home", 2),
    ("unknown `--overlap`", ["serve", "<dir>/good.py:twice", "--cron", "0 6 * * *", "--overlap", "never"], "home", 2),
    ("`--max-catchup` without `--catchup all`", ["serve", "<dir>/good.py:twice", "--interval", "60", "--max-catchup", "3"], "home", 2),
    ("`--max-catchup` past its maximum", ["serve", "<dir>/good.py:twice", "--interval", "60", "--catchup", "all", "--max-catchup", "99999999999999999999"], "home", 2),
    ("`serve --config` file missing", ["serve", "--config", "<dir>/nofile.toml"], "home", 2),
    ("`serve --config` with a target too", ["serve", "<dir>/good.py:twice", "--config", "<dir>/flows.toml"], "home", 2),
    ("`notify` of an unknown kind in a `flows.toml`", ["serve", "--config", "<dir>/notify_kind.toml"], "home", 2),
    ("`notify` webhook URL not http(s) in a `flows.toml`", ["serve", "--config", "<dir>/notify_url.toml"], "home", 2),
    ("`submit --address` not a job server URL", ["submit", "good.py:twice", "--address", CLOSED], "home", 2),
    ("`submit`: no job server at the address", ["submit", "good.py:twice", "--address", f"http://{CLOSED}"], "home", 3),
    ("`submit`: a parameter the flow rejects (checked before submitting)",
     ["submit", "good.py:twice", "-p", "n=lots", "--address", f"http://{CLOSED}"], "home", 2),
    ("`submit`: target missing from `--working-dir`",
     ["submit", "nofile.py:twice", "--working-dir", "<dir>", "--address", f"http://{CLOSED}"], "home", 2),
    ("`submit`: both a target and `--serve`",
     ["submit", "good.py:twice", "--serve", "flows.toml", "--address", f"http://{CLOSED}"], "home", 2),
    ("`submit --run-id` outside the run id rule",
     ["submit", "good.py:twice", "--run-id", "a/b", "--address", f"http://{CLOSED}"], "home", 2),
    ("`limit set`: a name with a space", ["limit", "set", "a b", "3"], "home", 2),
    ("`limit set`: a negative limit", ["limit", "set", "db", "-1"], "home", 2),
    ("`limit set`: a rate of 0", ["limit", "set", "api", "3", "--per-second", "0"], "home", 2),
    ("`limit set`: more slots than the history can keep", ["limit", "set", "db", "99999999999999999999999"], "home", 2),
    ("`limit set`: an infinite rate", ["limit", "set", "api", "3", "--per-second", "inf"], "home", 2),
    ("`show --watch` with a job server address", ["show", "some-run", "--watch", "--address", f"http://{CLOSED}"], "home", 2),
]


def scratch(root: pathlib.Path) -> pathlib.Path:
    """The files the cases name; a history holding the SUCCESS run ``taken-1``."""
    (root / "good.py").write_text(GOOD)
    (root / "syntax.py").write_text("import rayflow as rf\n\ndef oops(:\n    pass\n")
    (root / "failing.py").write_text("import rayflow as rf\n\nraise RuntimeError('no database here')\n")
    (root / "missing_dep.py").write_text("import no_such_package_anywhere\n")
    (root / "flows.toml").write_text('[[flow]]\ntarget = "good.py:twice"\ninterval = 60\n')
    (root / "fast.toml").write_text('[[flow]]\ntarget = "good.py:twice"\ninterval = 0.5\n')
    (root / "notify_kind.toml").write_text('[[flow]]\ntarget = "good.py:twice"\ninterval = 60\nnotify = [{kind = "pager"}]\n')
    (root / "notify_url.toml").write_text(
        '[[flow]]\ntarget = "good.py:twice"\ninterval = 60\nnotify = [{kind = "webhook", url = "ftp://hooks.example/x"}]\n')
    (root / "a-file").write_text("not a folder\n")
    (root / "empty.token").write_text("\n")
    (root / "short.token").write_text("abc\n")
    (root / "two.token").write_text("first-token-1234567890\nsecond-token-1234567890\n")
    (root / "corrupt").mkdir()
    (root / "corrupt" / "history.db").write_bytes(b"garbage " * 2000)
    made = cli(["run", "<dir>/good.py:twice", "--run-id", "taken-1", "--local"], root, "home")
    assert made.returncode == 0, made.stderr
    failed_run(root / "home", "moved-1", "f", "moved_flows:f")  # started where moved_flows.py was
    failed_run(root / "home", "lost-1", "lost", None)  # its flow was defined in __main__ (a notebook)
    return root


def failed_run(home: pathlib.Path, run_id: str, flow: str, target: str | None) -> None:
    """A FAILED run in the history, as a run of ``flow`` recorded it (no process needed)."""
    from rayflow.states import State, StateType
    from rayflow.store import RunStore
    from rayflow.store.recorder import HistoryRecorder

    graph = {"flow": flow, "nodes": [], "target": target, "flow_code": "0" * 64}
    recorder = HistoryRecorder(RunStore(home), run_id, flow, {}, [], graph)
    for old, new in ((StateType.PENDING, StateType.RUNNING), (StateType.RUNNING, StateType.FAILED)):
        recorder.on_transition(run_id=run_id, task_key=None, old=State(type=old), new=State(type=new))
    recorder.close()


# A case refused before any work runs in this process (its answer is the same as in a process of
# its own; no logging handler, signal handler, thread or Ray connection is left).  One whose answer
# comes from reaching an address where nothing listens (exit 3: a cluster or a job server) or that
# would record a run (``run --run-id taken-1``) runs ``python -m rayflow`` in a process of its own.
def in_process(argv: list[str], code: int) -> bool:
    return code != 3 and not (argv[0] == "run" and "taken-1" in argv)


def cli_in_process(argv: list[str], root: pathlib.Path, home: str) -> subprocess.CompletedProcess:
    homes = {"home": root / "home", "file": root / "a-file", "corrupt": root / "corrupt"}
    return run_cli_in_process(*(a.replace("<dir>", str(root)) for a in argv), home=homes[home], cwd=root,
                              RAY_ADDRESS=CLOSED, RAYFLOW_CONNECT_TIMEOUT="1")


def cli(argv: list[str], root: pathlib.Path, home: str) -> subprocess.CompletedProcess:
    homes = {"home": root / "home", "file": root / "a-file", "corrupt": root / "corrupt"}
    env = {**os.environ, "RAYFLOW_HOME": str(homes[home]), "RAY_ADDRESS": CLOSED, "PYTHONPATH": str(REPO),
           "RAYFLOW_CONNECT_TIMEOUT": "1"}  # no job server at an address: said after 1 s, not 10
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    return subprocess.run(
        [sys.executable, "-m", "rayflow", *(a.replace("<dir>", str(root)) for a in argv)],
        capture_output=True, text=True, timeout=120, cwd=root, env=env,
    )


def normalised(text: str, root: pathlib.Path) -> str:
    return text.replace(str(root.resolve()), "<dir>").replace(str(root), "<dir>")


# -- the Python API ------------------------------------------------------------------------


@rf.task
def double(x: int) -> int:
    return 2 * x


@rf.task
def pair(x: int, y: int) -> int:
    return x + y


@rf.flow(runner="local")
def twice(n: int = 1) -> int:
    return double(n)


@rf.flow(runner="local")
def with_secret(token: SecretStr, n: int = 1) -> int:
    return double(n)


@rf.flow(runner="local")
def unequal() -> list:
    return pair.map([1, 2, 3], [1, 2])


@rf.flow(runner="local")
def branches_on_a_result() -> int:
    if double(1) > 1:
        return double(2)
    return double(3)


@rf.flow(runner="local")
def says_yes() -> int:
    return double.with_options(trigger=lambda states: "yes")(1)


def _bad_option() -> Any:
    @rf.task(retries=-1, timeout="soon")
    def f() -> None: ...


def _bad_max_loops() -> Any:
    @rf.task(max_loops=0)
    def f() -> None: ...


def _failed_result() -> Any:
    return says_yes.with_options(run_id="says-yes-1").run().result()


API_CASES: list[tuple[str, str, Any]] = [
    ("parameter of the wrong type", "twice.run(n='lots')", lambda: twice.run(n="lots")),
    ("unknown and missing parameters", "with_secret.run(colour='red')", lambda: with_secret.run(colour="red")),
    ("a secret of the wrong type", "with_secret.run(token=12345)", lambda: with_secret.run(token=12345)),
    ("a run id the history has", "twice.with_options(run_id='taken-1').run()", lambda: twice.with_options(run_id="taken-1").run()),
    ("a run id outside the run id rule", "twice.with_options(run_id='a/b')", lambda: twice.with_options(run_id="a/b")),
    ("resume of a run id outside the run id rule", "rf.resume('../x')", lambda: rf.resume("../x")),
    ("bad task options", "@rf.task(retries=-1, timeout='soon')", _bad_option),
    ("a max_loops under 1 (rf.Loop)", "@rf.task(max_loops=0)", _bad_max_loops),
    ("mapped arguments of unequal lengths", "pair.map([1, 2, 3], [1, 2])", lambda: unequal.run()),
    ("`if` on a task result in a flow body", "if double(1) > 1: ...", lambda: branches_on_a_result.run()),
    ("resume of an unknown run", "rf.resume('no-such-run')", lambda: rf.resume("no-such-run")),
    ("resume of a run whose flow is neither in this process nor importable", "rf.resume('lost-1')",
     lambda: rf.resume("lost-1")),
    ("approve of a task that is not paused", "rf.approve('taken-1', 'double')", lambda: rf.approve("taken-1", "double")),
    ("a limit past what the history keeps", "rf.limits.set('db', 2**63)", lambda: rf.limits.set("db", 2**63)),
    ("a notifier's URL not http(s)", "rf.notify.slack('ftp://hooks.example/x')", lambda: rf.notify.slack("ftp://hooks.example/x")),
    ("an e-mail notifier with no recipients", "rf.notify.email([])", lambda: rf.notify.email([])),
    ("an SLA with nothing to check", "@rf.flow(sla=rf.SLA())", lambda: rf.SLA()),
    ("a trigger returning `'yes'`; `result()` of the failed run", "says_yes.with_options(run_id='says-yes-1').run().result()", _failed_result),
]


# -- the doc -------------------------------------------------------------------------------

def cell(text: str) -> str:
    return text.replace("|", "\\|")


def code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def cli_table(rows: list[tuple[str, list[str], int, str]]) -> str:
    lines = ["| bad input | command | exit | message (stderr, one line) |", "| --- | --- | ---: | --- |"]
    for what, argv, code_, message in rows:
        command = " ".join(a if a and " " not in a and "*" not in a else repr(a) for a in ["rayflow", *argv])
        lines.append(f"| {what} | {cell(code(command))} | {code_} | {cell(code(message))} |")
    return "\n".join(lines)


def api_table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| bad input | call | raises | message |", "| --- | --- | --- | --- |"]
    for what, call, kind, message in rows:
        lines.append(f"| {what} | {cell(code(call))} | `rf.{kind}` | {cell(code(message))} |")
    return "\n".join(lines)


def section(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:begin -->\n(.*?)\n<!-- {name}:end -->", text, re.S)
    assert match, f"docs/bad-inputs.md has no {name} table"
    return match.group(1)


def replace_section(text: str, name: str, table: str) -> str:
    return re.sub(rf"(<!-- {name}:begin -->\n).*?(\n<!-- {name}:end -->)", lambda m: m.group(1) + table + m.group(2), text, flags=re.S)


@pytest.mark.slow  # 6 commands in processes of their own (about 2 s each on 2 busy cores)
@pytest.mark.timeout(600)
def test_every_bad_input_is_one_line_with_its_documented_exit_code(tmp_path, monkeypatch):
    root = scratch(tmp_path)
    with ThreadPoolExecutor(2) as pool:  # the processes run while this one answers the in-process cases
        spawned = {i: pool.submit(cli, argv, root, home) for i, (_, argv, home, code_) in enumerate(CLI_CASES)
                   if not in_process(argv, code_)}
        here = {i: cli_in_process(argv, root, home) for i, (_, argv, home, code_) in enumerate(CLI_CASES) if in_process(argv, code_)}
        results = [here[i] if i in here else spawned[i].result() for i in range(len(CLI_CASES))]
    rows, wrong = [], []
    for (what, argv, _, code_), out in zip(CLI_CASES, results):
        lines = out.stderr.splitlines()
        if out.returncode != code_ or len(lines) != 1 or out.stdout or not lines[0].startswith("error: "):
            wrong.append((what, argv, out.returncode, out.stdout[-500:], out.stderr[-1500:]))
            continue
        rows.append((what, argv, code_, normalised(lines[0], root)))
    assert wrong == []

    monkeypatch.setenv("RAYFLOW_HOME", str(root / "home"))
    api_rows = []
    for what, call, make in API_CASES:
        with pytest.raises(rf.RayflowError) as raised:
            make()
        message = str(raised.value)
        assert "\n" not in message and "Traceback" not in message, message
        api_rows.append((what, call, type(raised.value).__name__, normalised(message, root)))

    doc = DOC.read_text()
    tables = {"cli": cli_table(rows), "api": api_table(api_rows)}
    if os.environ.get("RAYFLOW_REGENERATE_DOCS"):
        new = doc
        for name, table in tables.items():
            new = replace_section(new, name, table)
        DOC.write_text(new)
        if new != doc:  # a rewrite never passes: the run that rewrote the doc compared nothing
            pytest.fail("docs/bad-inputs.md rewritten: read the diff, then run the test again without RAYFLOW_REGENERATE_DOCS")
    for name, table in tables.items():
        assert section(doc, name) == table, (
            f"docs/bad-inputs.md's {name} table is not what rayflow says; "
            "rerun with RAYFLOW_REGENERATE_DOCS=1 to rewrite it, and read the diff"
        )


def test_the_doc_is_linked_from_the_readme():
    assert "docs/bad-inputs.md" in (REPO / "README.md").read_text()
    assert textwrap.dedent(DOC.read_text()).startswith("# Bad inputs and what rayflow answers")
