"""A Ray job server's REST API on the standard library, for ``http://`` addresses: the calls
``runtime.driver.jobs`` makes of Ray's ``JobSubmissionClient``, without importing it.

Importing Ray's client imports Ray, aiohttp, pydantic and requests (about 0.85 s of CPU), and
making one asks the server for its version twice: most of what ``rayflow submit`` cost before
its job reached the cluster.  This client sends the requests Ray's client sends (the same
endpoints and JSON bodies) and fails as it fails: any answer but 200 is
``RuntimeError("Request failed with status code N: TEXT.")``, which ``jobs`` reads (the
agent not up yet, a job id taken, an upload too large, a job that does not exist).

- A working dir is packaged and uploaded with Ray's own functions (its excludes, .gitignore
  and .rayignore, the package's content hash as its name; imported only then): Ray's client
  does the same through the same functions.
- A runtime env with more than env vars and a working dir (``--pip`` packages, the stored
  env of a resumed job) is submitted by Ray's client, made on first use: it parses and
  checks those fields as it always did.
- https:// addresses use Ray's client throughout (``jobs.connect``), with its certificate handling.
"""

from __future__ import annotations

import copy
import http.client
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayflow.state_types import error_text

FAST_FIELDS = {"env_vars", "working_dir"}  # runtime env fields sent as they are, no Ray client needed


@dataclass(frozen=True)
class JobStatus:
    value: str  # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED


@dataclass(frozen=True)
class JobInfo:
    """What ``jobs`` reads of Ray's JobDetails."""

    status: JobStatus
    message: str | None
    runtime_env: dict[str, Any] | None


def request(method: str, url: str, headers: dict[str, str], data: bytes | None = None,
            timeout: float | None = None) -> tuple[int, str]:
    """(status, body text) of one HTTP request; an HTTP error status is an answer, not an error.
    No answer raises an OSError (urllib's URLError; a peer that is no HTTP server, ConnectionError),
    as requests raises its ConnectionError (an OSError too)."""
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:  # noqa: S310 - http(s) URLs only
            return answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except http.client.HTTPException as exc:
        raise ConnectionError(f"{url}: {error_text(type(exc).__name__, str(exc))}") from exc


class JobClient:
    """Ray's job server at ``address`` (``http://HEAD:8265``), sending ``headers`` (its token)."""

    def __init__(self, address: str, headers: dict[str, str]):
        self._address = address
        self._headers = dict(headers)
        self._ray_client: Any = None

    def _do(self, method: str, endpoint: str, body: Any = None, data: bytes | None = None) -> tuple[int, str]:
        headers = dict(self._headers)
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return request(method, self._address + endpoint, headers, data)

    @staticmethod
    def _raise(status: int, text: str) -> None:
        raise RuntimeError(f"Request failed with status code {status}: {text}.")  # as Ray's client says it

    def _json(self, method: str, endpoint: str, body: Any = None) -> Any:
        status, text = self._do(method, endpoint, body)
        if status != 200:
            self._raise(status, text)
        return json.loads(text)

    def ray_client(self) -> Any:
        """Ray's JobSubmissionClient for the same server, made once, on first use."""
        if self._ray_client is None:
            sdk_log = logging.getLogger("ray.dashboard.modules.dashboard_sdk")
            quieted = sdk_log.level  # set by jobs.submit before this import, which sets it to INFO
            from ray.job_submission import JobSubmissionClient

            if quieted:
                sdk_log.setLevel(quieted)
            self._ray_client = JobSubmissionClient(self._address, headers=self._headers)
        return self._ray_client

    def submit_job(self, *, entrypoint: str, submission_id: str | None = None,
                   runtime_env: dict[str, Any] | None = None, metadata: dict[str, str] | None = None) -> str:
        runtime_env = copy.deepcopy(runtime_env or {})
        if not set(runtime_env) <= FAST_FIELDS:
            return self.ray_client().submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                                runtime_env=runtime_env, metadata=metadata)
        if runtime_env.get("working_dir") is not None:
            self._upload_working_dir(runtime_env)
        body: dict[str, Any] = {"entrypoint": entrypoint, "runtime_env": runtime_env, "metadata": dict(metadata or {})}
        if submission_id is not None:
            body["submission_id"] = submission_id
        return str(self._json("POST", "/api/jobs/", body)["submission_id"])

    def get_job_info(self, sid: str) -> JobInfo:
        found = self._json("GET", f"/api/jobs/{sid}")
        return JobInfo(JobStatus(str(found["status"])), found.get("message"), found.get("runtime_env"))

    def get_job_logs(self, sid: str) -> str:
        return str(self._json("GET", f"/api/jobs/{sid}/logs")["logs"])

    def stop_job(self, sid: str) -> bool:
        return bool(self._json("POST", f"/api/jobs/{sid}/stop")["stopped"])

    def delete_job(self, sid: str) -> bool:
        return bool(self._json("DELETE", f"/api/jobs/{sid}")["deleted"])

    def _upload_working_dir(self, runtime_env: dict[str, Any]) -> None:
        """``runtime_env["working_dir"]`` as the URI of its package on the cluster, uploaded unless
        the cluster has it: what Ray's client does (``_upload_working_dir_if_needed``)."""
        from ray._private.ray_constants import RAY_RUNTIME_ENV_IGNORE_GITIGNORE
        from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

        include_gitignore = os.environ.get(RAY_RUNTIME_ENV_IGNORE_GITIGNORE, "0") != "1"

        def upload(path: str, excludes: list[str] | None, is_file: bool = False) -> None:
            self._upload_package_if_needed(path, include_gitignore, excludes, is_file)

        upload_working_dir_if_needed(runtime_env, include_gitignore=include_gitignore, upload_fn=upload)

    def _upload_package_if_needed(self, path: str, include_gitignore: bool, excludes: list[str] | None,
                                  is_file: bool) -> None:
        from ray._private.runtime_env.packaging import create_package, get_uri_for_directory, get_uri_for_package

        uri = get_uri_for_package(Path(path)) if is_file else get_uri_for_directory(path, include_gitignore, excludes=excludes)
        protocol, _, name = uri.partition("://")
        endpoint = f"/api/packages/{protocol}/{name}"
        status, text = self._do("GET", endpoint)
        if status == 200:
            return
        if status != 404:
            self._raise(status, text)
        with tempfile.TemporaryDirectory() as scratch:
            package = Path(path) if is_file else Path(scratch) / name
            if not is_file:
                create_package(path, package, include_gitignore=include_gitignore, include_parent_dir=False,
                               excludes=excludes)
            status, text = self._do("PUT", endpoint, data=package.read_bytes())
        if status != 200:
            self._raise(status, text)
