"""Artifacts (``rf.artifacts``): ``/artifacts`` (the latest version of each key, newest first),
``/artifacts/{key}`` (a version shown, and every version with its run), a run's artifacts as
an HTML fragment the run and task pages load (``/runs/{run_id}/artifacts?task=KEY``), an image's
PNG (``/artifacts/image/{id}``), and their JSON (``/api/artifacts``, ``/api/runs/{id}/artifacts``)."""

from __future__ import annotations

import base64
import binascii

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rayflow.ui.artifact_render import shown
from rayflow.ui.context import UI
from rayflow.ui.queries import MAX_PAGE, QueryError, one, whole

PAGE_SIZE = 50  # keys on /artifacts, versions on /artifacts/{key}
RUN_PAGE_SIZE = 100  # a run's artifacts in its fragment (and /api/runs/{id}/artifacts)
MAX_KEY = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def number(params: QueryParams, name: str, default: int | None) -> int | None:
    """A page or version number: a whole number from 1 (``default`` when absent)."""
    return whole(params, name, 1, MAX_PAGE, default)


def public(artifact: dict) -> dict:
    """An artifact for JSON: its data, and where its image is (never the bytes inline)."""
    out = {k: v for k, v in artifact.items() if k != "html"}
    if artifact["kind"] == "image":
        out["image_url"] = f"/artifacts/image/{artifact['artifact_id']}"
    return out


def routes(ui: UI) -> list[Route]:
    store = ui.store

    async def artifacts_page(request: Request) -> Response:
        try:
            page = number(request.query_params, "page", 1)
        except QueryError as exc:
            return ui.bad_query(request, exc)
        rows = store.latest_artifacts(limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
        return ui.page(request, "artifacts.html", artifacts=rows[:PAGE_SIZE], page=page, more=len(rows) > PAGE_SIZE)

    async def artifact_page(request: Request) -> Response:
        key = request.path_params["key"]
        try:
            version = number(request.query_params, "version", None)
            page = number(request.query_params, "page", 1)
        except QueryError as exc:
            return ui.bad_query(request, exc)
        artifact = store.artifact(key, version=version) if len(key) <= MAX_KEY else None
        if artifact is None:
            return ui.missing(request, "artifact", key if version is None else f"{key} version {version}")
        versions = store.artifact_versions(key, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
        return ui.page(
            request, "artifact.html", key=key, artifact=shown(artifact), versions=versions[:PAGE_SIZE], page=page,
            more=len(versions) > PAGE_SIZE,
        )

    def run_rows(request: Request, extra: int) -> tuple[str, str | None, int, list[dict]] | Response:
        """A page of a run's artifacts (``?task=KEY``: one task's; ``&page=N``) and ``extra`` rows
        more, or the 400/404 that answers instead."""
        run_id = request.path_params["run_id"]
        try:
            task, page = one(request.query_params, "task"), number(request.query_params, "page", 1)
        except QueryError as exc:
            return ui.bad_query(request, exc)
        if store.run_state(run_id) is None:
            return ui.missing(request, "run", run_id)
        rows = store.run_artifacts(run_id, task=task, limit=RUN_PAGE_SIZE + extra, offset=(page - 1) * RUN_PAGE_SIZE)
        return run_id, task, page, rows

    async def run_fragment(request: Request) -> Response:
        """A run's artifacts, the HTML the run and task pages load."""
        if isinstance(found := run_rows(request, 1), Response):
            return found
        run_id, task, page, rows = found
        return ui.page(
            request, "run_artifacts.html", run_id=run_id, task=task, page=page, more=len(rows) > RUN_PAGE_SIZE,
            artifacts=[shown(a) for a in rows[:RUN_PAGE_SIZE]],
        )

    async def image(request: Request) -> Response:
        artifact_id = request.path_params["artifact_id"]
        encoded = store.artifact_image(artifact_id) if artifact_id < 2**63 else None  # past it: no SQLite integer
        try:
            png = base64.b64decode(encoded, validate=True) if encoded is not None else None
        except (binascii.Error, ValueError):
            png = None
        if png is None or not png.startswith(PNG_SIGNATURE):  # served as image/png (nosniff): only a PNG
            return ui.missing(request, "image artifact", str(artifact_id))
        return Response(png, media_type="image/png", headers={"cache-control": "private, max-age=3600"})

    async def api_artifacts(request: Request) -> Response:
        """The latest version of each key (``?page=N``), or with ``?key=K`` that key's versions."""
        params = request.query_params
        try:
            page = number(params, "page", 1)
        except QueryError as exc:
            return ui.bad_query(request, exc)
        try:
            key = one(params, "key")
        except QueryError as exc:
            return ui.bad_query(request, exc)
        offset = (page - 1) * PAGE_SIZE
        if key is None:
            return JSONResponse(store.latest_artifacts(limit=PAGE_SIZE, offset=offset))
        versions = store.artifact_versions(key, limit=PAGE_SIZE, offset=offset) if len(key) <= MAX_KEY else []
        if not versions and page == 1:
            return ui.missing(request, "artifact", key)
        return JSONResponse(versions)

    async def api_run_artifacts(request: Request) -> Response:
        if isinstance(found := run_rows(request, 0), Response):
            return found
        return JSONResponse([public(a) for a in found[3]])

    return [
        Route("/artifacts", artifacts_page),
        Route("/artifacts/image/{artifact_id:int}", image),
        Route("/artifacts/{key}", artifact_page),
        Route("/runs/{run_id}/artifacts", run_fragment),
        Route("/api/artifacts", api_artifacts),
        Route("/api/runs/{run_id}/artifacts", api_run_artifacts),
    ]
