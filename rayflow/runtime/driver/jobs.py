"""Runs submitted to a Ray cluster as Ray Jobs: the driver runs on the cluster, not here.

A run's job has the submission id ``rayflow-<run id>``, so submitting one run id twice finds
the first job instead of starting a second run.  The job server (the head's dashboard, Ray's
``ray[default]``) is reached over HTTP at ``http(s)://HEAD:8265``:

- no server there: a bounded wait, then ClusterConnectionError naming the address;
- a server whose head has no job agent up yet (a head started seconds ago answers a submit
  with 500 "No available agent to submit job"): each submit is retried until the same wait
  has passed, then ClusterConnectionError;
- a server that asks for Ray's token (401/403): the token is found the way Ray finds it
  (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token) and sent, whatever RAY_AUTH_MODE
  says here; missing or rejected, a ClusterAuthenticationError says how to give it.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from rayflow.exceptions import ClusterAuthenticationError, ClusterConnectionError

CONNECT_WAIT = 10.0  # seconds to wait for a job server before giving up (RAYFLOW_CONNECT_TIMEOUT)
SUBMISSION_PREFIX = "rayflow-"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Driver settings that travel to the job: telemetry and rayflow's own, but not where this
# machine keeps its history (a run on a cluster records it where the cluster keeps it).
FORWARDED_PREFIXES = ("OTEL_", "RAYFLOW_")
# Not forwarded: where this machine keeps its history, how long this machine waits for a
# cluster, and an OTLP endpoint on this machine's loopback (the cluster's own endpoint, if
# its nodes set one, is used instead: no node can reach this machine's localhost).
NOT_FORWARDED = ("RAYFLOW_HOME", "RAYFLOW_CONNECT_TIMEOUT", "RAYFLOW_UI_TOKEN")  # the UI's token stays here
LOOPBACK_HOSTS = ("localhost", "127.", "[::1]", "0.0.0.0")


def submission_id(run_id: str) -> str:
    return SUBMISSION_PREFIX + run_id


def forwarded_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {
        k: v for k, v in environ.items()
        if k.startswith(FORWARDED_PREFIXES) and k not in NOT_FORWARDED
        and not (k.startswith("OTEL_EXPORTER_OTLP") and k.endswith("ENDPOINT") and _on_loopback(v))
    }


def _on_loopback(url: str) -> bool:
    host = url.split("://", 1)[-1].lower()
    return host.startswith(LOOPBACK_HOSTS)


TOKEN_SOURCES = "RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token"  # where Ray looks, in order


def _token_file() -> str:
    """The file Ray reads its token from when RAY_AUTH_TOKEN is not set."""
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")


def token_source() -> str | None:
    """Where this process has a Ray token, in the order Ray looks (RAY_AUTH_TOKEN, the file
    RAY_AUTH_TOKEN_PATH names, ~/.ray/auth_token), as a message names it; None: nowhere."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH ({os.environ['RAY_AUTH_TOKEN_PATH']})"
    if os.path.exists(_token_file()):
        return _token_file()
    return None


def _token_headers() -> dict[str, str]:
    """Ray's token as the HTTP header Ray's clients send: read here from where Ray reads it
    (``token_source``; no Ray import), else by Ray's own loader."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    path = _token_file()
    if not token and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError):
            token = ""
    if token:
        return {"authorization": f"Bearer {token}"}
    from ray._raylet import AuthenticationTokenLoader

    return dict(AuthenticationTokenLoader.instance().get_token_for_http_header(ignore_auth_mode=True) or {})


def _auth_error(address: str, rejected: bool) -> ClusterAuthenticationError:
    from rayflow.runtime.driver.auth import TOKEN_AUTH_DOCS  # imports Ray, as the token's look-up did

    where = f"the Ray job server at {address} requires token authentication"
    sources = TOKEN_SOURCES
    if rejected:
        message = (
            f"{where} and rejected the token from {token_source()}: use the token the cluster was started "
            f"with (`ray get-auth-token` on its head node) (see {TOKEN_AUTH_DOCS})"
        )
    else:
        message = f"{where} and no token was found: give the cluster's token in {sources} (see {TOKEN_AUTH_DOCS})"
    return ClusterAuthenticationError(message, address=address)


def _get_status(url: str, headers: dict[str, str]) -> int:
    if url.lower().startswith("http://"):
        from rayflow.runtime.driver.job_client import request

        return request("GET", url, headers, timeout=5)[0]
    import requests  # https: as Ray's client reaches it (its certificates)

    return requests.get(url, headers=headers, timeout=5).status_code


def _failure_name(exc: OSError) -> str:
    """The name requests gives such a failure (ConnectionError, or its timeouts), for either client."""
    if type(exc).__module__.startswith("requests"):
        return type(exc).__name__
    timed_out = isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)
    return "Timeout" if timed_out else "ConnectionError"


def _probe(address: str, headers: dict[str, str], wait: float) -> int:
    """The status of GET /api/version, retried on connection errors for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return _get_status(f"{address}/api/version", headers)
        except OSError as exc:  # urllib's URLError and requests' RequestException are OSErrors
            if time.monotonic() >= deadline:
                reason = _failure_name(exc)
                raise ClusterConnectionError(
                    f"no Ray job server answered at {address} within {wait:g}s ({reason}); start the cluster "
                    "with its dashboard (`ray start --head`, Ray's ray[default]) and give its address, "
                    "e.g. http://HEAD:8265",
                    address=address,
                ) from None
            time.sleep(0.5)


def _connect_wait() -> float:
    return float(os.environ.get("RAYFLOW_CONNECT_TIMEOUT", CONNECT_WAIT))


# What a job server answers a submit with while its head's job agent is not up (or not yet
# listening): Ray's own "try again later", or its traceback of the agent it could not reach.
AGENT_NOT_UP = ("No available agent", "Failed to get head node agent", "Cannot connect to host", "ClientConnectorError")


def submit_job(client: Any, **job: Any) -> Any:
    """``client.submit_job(**job)``, retried while the head's job agent is not up, for up to
    RAYFLOW_CONNECT_TIMEOUT seconds: then ClusterConnectionError (the cluster is not ready),
    never the user's bad input.  Any other refusal is raised as Ray raised it."""
    wait = _connect_wait()
    deadline = time.monotonic() + wait
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as exc:
            if "status code 500" not in str(exc) or not any(text in str(exc) for text in AGENT_NOT_UP):
                raise
            if time.monotonic() >= deadline:
                address = getattr(client, "_address", "the cluster")
                raise ClusterConnectionError(
                    f"the Ray job server at {address} had no job agent to run the job after {wait:g}s "
                    "(\"No available agent to submit job\"): the head node is still starting or its dashboard "
                    "agent is down; try again, or wait longer with RAYFLOW_CONNECT_TIMEOUT",
                    address=address,
                ) from None
            time.sleep(0.5)


def connect(address: str, wait: float | None = None) -> Any:
    """A client of the job server at ``address``, with Ray's token when it asks: for http://,
    ``job_client.JobClient`` (the REST API on the standard library), else Ray's JobSubmissionClient."""
    if wait is None:
        wait = _connect_wait()
    plain = address.lower().startswith("http://")
    try:
        if not plain:
            from ray.job_submission import JobSubmissionClient
    except ImportError:  # pragma: no cover - ray without [default]
        raise ClusterConnectionError(
            "submitting to a cluster needs Ray's job client: pip install 'rayflow[cluster]' (ray[default])",
            address=address,
        ) from None
    address = address.rstrip("/")
    headers: dict[str, str] = {}
    status = _probe(address, headers, wait)
    if status in (401, 403):
        headers = _token_headers()
        if not headers:
            raise _auth_error(address, rejected=False)
        if _probe(address, headers, wait) in (401, 403):
            raise _auth_error(address, rejected=True)
    elif status != 200:
        raise ClusterConnectionError(
            f"{address} is not a Ray job server (GET /api/version answered {status})", address=address
        )
    if plain:
        from rayflow.runtime.driver.job_client import JobClient

        return JobClient(address, headers)
    return JobSubmissionClient(address, headers=headers)


UPLOAD_LIMIT = 100 * 1024**2  # the job server's request size limit (Ray's dashboard), which bounds a working dir


class UploadTooLargeError(ValueError):
    """A working dir whose package the job server refuses for its size."""


def _folder_size(folder: str) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


@dataclass
class Submitted:
    submission_id: str
    already: bool  # a job with this id was there before: nothing new was started
    status: str


def submit(client: Any, run_id: str, entrypoint: str, *, working_dir: str | None = None,
           pip: list[str] | None = None, env_vars: dict[str, str] | None = None,
           again_once_ended: bool = False) -> Submitted:
    """Submit the run's job unless a job with its submission id exists already (with
    ``again_once_ended``, as for a server: unless one is still going; an ended one is
    deleted and submitted again)."""
    sid = submission_id(run_id)
    existing = job_status(client, sid)
    if existing is not None and not (again_once_ended and existing in TERMINAL):
        return Submitted(sid, True, existing)
    if existing is not None:  # ended when, unknown: maybe just now (a server cancelled), so its last look may be due
        _delete(client, sid, ended=time.monotonic())
    runtime_env: dict[str, Any] = {"env_vars": dict(env_vars or {})}
    if working_dir is not None:
        runtime_env["working_dir"] = working_dir
    if pip:
        runtime_env["pip"] = list(pip)
    for noisy in ("ray._private.runtime_env.packaging", "ray.dashboard.modules.dashboard_sdk"):
        logging.getLogger(noisy).setLevel(logging.ERROR)  # a refused upload is one line, below
    try:
        submit_job(client, entrypoint=entrypoint, submission_id=sid, runtime_env=runtime_env,
                   metadata={"rayflow_run_id": run_id})
    except RuntimeError as exc:
        if "already exists" in str(exc):  # submitted meanwhile by another submit of this run id
            return Submitted(sid, True, job_status(client, sid) or "PENDING")
        if "status code 413" in str(exc) and working_dir is not None:
            raise UploadTooLargeError(
                f"the working dir {working_dir} ({_mib(_folder_size(working_dir))} before zipping) is over the job "
                f"server's upload limit ({_mib(UPLOAD_LIMIT)} zipped): leave large files out with a .rayignore or "
                ".gitignore there, or fetch them on the cluster"
            ) from None
        raise
    return Submitted(sid, False, "PENDING")


def resubmit(client: Any, run_id: str, entrypoint: str, working_dir: str | None = None) -> Submitted:
    """The run's job again, as ``entrypoint`` (``rayflow resume``), once its first job has ended:
    under the same submission id (``rayflow cancel``/``logs`` find it), with the ended job's
    runtime env (its uploaded working dir, pip packages, env vars) or ``working_dir`` uploaded
    anew.  A job still going is left alone (``already``); LookupError when the run has no job."""
    sid = submission_id(run_id)
    status = job_status(client, sid)
    if status is None:
        raise LookupError(sid)
    if status not in TERMINAL:
        return Submitted(sid, True, status)
    runtime_env = dict(client.get_job_info(sid).runtime_env or {})
    if working_dir is not None:
        runtime_env["working_dir"] = working_dir
    _delete(client, sid, ended=time.monotonic())  # (as in submit: it may have ended just now)
    submit_job(client, entrypoint=entrypoint, submission_id=sid, runtime_env=runtime_env,
               metadata={"rayflow_run_id": run_id, "rayflow_resumed": "1"})
    return Submitted(sid, False, "PENDING")


def job_status(client: Any, sid: str) -> str | None:
    """The job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED), or None when there is none."""
    try:
        return str(client.get_job_info(sid).status.value)
    except RuntimeError as exc:
        if "does not exist" in str(exc) or "404" in str(exc):
            return None
        raise


QUERY_WAIT = 60.0  # seconds a query job (``rayflow show``/``runs`` on the head) may take


def query(client: Any, command: str, wait: float = QUERY_WAIT) -> tuple[int, str, str]:
    """Run ``command`` (a read-only ``rayflow`` command) as a short job on the cluster, so the
    head's run history is read where it is kept: its exit code, stdout and stderr.  The job
    is deleted afterwards, so queries do not pile up in the cluster's job list."""
    sid = f"{SUBMISSION_PREFIX}query-{uuid.uuid4().hex[:12]}"
    # Ray's job log holds Ray's own lines (runtime env set-up, the entrypoint) and the job's
    # stdout and stderr merged: the command writes both to files, printed after marks that
    # the logged entrypoint does not hold (each is printed in two halves).
    out_mark, err_mark = f"--- rayflow query {sid} stdout ---", f"--- rayflow query {sid} stderr ---"
    script = (
        'o=$(mktemp) && e=$(mktemp) && { ' + command + ' >"$o" 2>"$e"; rc=$?; '
        + _printf(out_mark) + ' && cat "$o" && ' + _printf(err_mark) + ' && cat "$e"; rm -f "$o" "$e"; exit $rc; }'
    )
    ended = time.monotonic()
    try:
        submit_job(client, entrypoint=script, submission_id=sid, metadata={"rayflow_query": "1"})
        deadline = time.monotonic() + wait
        while (status := job_status(client, sid) or "FAILED") not in TERMINAL:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the query job {sid} had not ended after {wait:g}s")
            time.sleep(0.2)
        ended = time.monotonic()
        text = logs(client, sid)
        if out_mark + "\n" not in text:  # it failed before the command ran (its runtime env, say)
            raise RuntimeError(f"the query job {sid} ended {status} before running: {job_message(client, sid)}")
        out = text.partition(out_mark + "\n")[2]
        out, _, err = out.partition(err_mark + "\n")
        return exit_code(status, job_message(client, sid)), _without_ray_lines(out, sid), _without_ray_lines(err, sid)
    finally:
        if job_status(client, sid) not in (*TERMINAL, None):
            client.stop_job(sid)  # a timeout or Ctrl-C: not left running
        _delete(client, sid, ended)


def _printf(mark: str) -> str:
    half = len(mark) // 2
    return f"printf '%s%s\\n' '{mark[:half]}' '{mark[half:]}'"


def _without_ray_lines(text: str, sid: str) -> str:
    ray_line = f"Running entrypoint for job {sid}"  # Ray logs it as the job starts: it may land anywhere
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith(ray_line))


# Ray's job manager looks at each job every second until it sees it ended; a job deleted
# before that look is written back, FAILED ("job supervisor actor died").
JOB_MONITOR_SECONDS = 1.0


def _delete(client: Any, sid: str, ended: float) -> None:
    """Delete an ended job once Ray's job manager has stopped watching it."""
    time.sleep(max(0.0, ended + 2 * JOB_MONITOR_SECONDS - time.monotonic()))
    for _ in range(4):
        try:
            client.delete_job(sid)
        except RuntimeError:  # gone already
            pass
        time.sleep(JOB_MONITOR_SECONDS / 2)
        if job_status(client, sid) is None:
            return


def job_message(client: Any, sid: str) -> str:
    return client.get_job_info(sid).message or ""


def exit_code(status: str, message: str) -> int:
    """The exit code of `rayflow run` on the cluster, as far as the job says it: SUCCEEDED 0;
    FAILED the entrypoint's exit code when the job's message has it, else 1; STOPPED 1."""
    if status == "SUCCEEDED":
        return 0
    if status == "FAILED":
        found = re.search(r"exit code (\d+)", message)
        return int(found.group(1)) if found and found.group(1) != "0" else 1
    return 1


def logs(client: Any, sid: str) -> str:
    return client.get_job_logs(sid)


def stop(client: Any, sid: str, wait: float) -> str:
    """Stop the job (SIGTERM to its driver: `rayflow run` cancels the run) and wait for it to end."""
    client.stop_job(sid)
    deadline = time.monotonic() + wait
    while True:
        status = job_status(client, sid) or "STOPPED"
        if status in TERMINAL or time.monotonic() >= deadline:
            return status
        time.sleep(0.5)
