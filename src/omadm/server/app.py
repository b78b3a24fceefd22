"""The server's ASGI application: the DM endpoint, package downloads, health; REST comes on top.

``create_app(config)`` wires the parts: the store (SQLite or PostgreSQL), the artifact
storage, the DM endpoint at ``POST /dm`` (a plain Starlette route: it needs none of FastAPI's
request machinery, which costs tens of microseconds a message), the signed package and
descriptor downloads under ``/artifacts``, ``GET /health``, the REST API with its docs
(``/api/docs``, Swagger UI served from the package: no CDN) and the console. The schema must
be at this omadm's revision (``omadm server`` creates it in an empty database and upgrades
an older one with ``--migrate``); the app refuses to start on another rather than fail later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .api import API_PREFIX, api_router, install_problem_handlers
from .artifacts.backends import open_storage, prepare_storage, presigner
from .artifacts.routes import artifact_routes
from .artifacts.service import get_artifact
from .artifacts.storage import ArtifactStorage
from .artifacts.urls import descriptor_url, download_url
from .config import ServerConfig
from .console import console_routes
from .dm_endpoint import DMEndpoint, PackageLocator
from .docs_ui import docs_routes
from .lease import sweep_lease
from .metrics import DB_POOL_SIZE, GROUP_COMMIT_BATCH, watch_pool, worker_stopped
from .observability import observability_routes
from .store.engine import check_schema, database_url, make_engine, make_sync_engine, session_factory
from .store.models import Device, Job, JobKind, JobState, utc_now
from .store.writer import DmWriter
from .sweeper import run_sweeper

__all__ = ["OPENAPI_URL", "create_app"]

log = logging.getLogger("omadm.server")

#: The OpenAPI document; the interactive docs are at ``docs_ui.DOCS_URL`` (``/api/docs``).
OPENAPI_URL = "/api/openapi.json"

_BY_URL = {
    JobKind.INSTALL.value,
    JobKind.INSTALL_INACTIVE.value,
    JobKind.DOWNLOAD.value,
    JobKind.UPDATE.value,
}


def create_app(config: ServerConfig, *, engine: AsyncEngine | None = None) -> FastAPI:
    """The application for one worker; ``engine`` defaults to the configured database."""
    engine = engine or make_engine(database_url(config.db or None, config.data_dir))
    sessions = session_factory(engine)
    storage = open_storage(config)  # [artifacts]: a local directory or an S3 bucket
    secret = config.secret_bytes()
    sync = make_sync_engine(engine.url.render_as_string(hide_password=False)) if config.group_commit else None
    writer = DmWriter(sync) if sync is not None else None
    if writer is not None:
        writer.on_batch = GROUP_COMMIT_BATCH.observe  # messages per group commit (metrics.py)
    endpoint = DMEndpoint(config, sessions, locate=artifact_locator(config, storage, secret), writer=writer)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await check_schema(engine)
        pooled = watch_pool(engine)  # omadm_db_pool_* (metrics.py)
        await prepare_storage(storage)  # tidy half-written uploads, or check the bucket
        if writer is not None:
            writer.start()
        # Every worker runs the sweeper loop (Package #0, job deadlines, idle DM sessions,
        # campaigns); the one holding the lease sweeps (lease.py), the others stand by.
        # sweep_interval 0 turns the sweeper off.
        sweeper = (
            asyncio.create_task(run_sweeper(sessions, config, app.state.sweep_lease), name="omadm-sweeper")
            if config.sweep_interval > 0
            else None
        )
        log.info("omadm server ready: DM endpoint %s", config.dm_url)
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with suppress(asyncio.CancelledError):
                    await sweeper
            if writer is not None:
                await writer.close()
            await engine.dispose()
            DB_POOL_SIZE.dec(pooled)
            worker_stopped()

    async def dm(request: Request) -> Response:
        return await endpoint(request)

    async def health(request: Request) -> Response:
        async with sessions() as db:
            await db.execute(text("SELECT 1"))
        return JSONResponse({"status": "ok"})

    async def install_notified(correlator: str, code: int, text_: str) -> None:
        await _record_install_notify(sessions, correlator, code, text_)

    app = OmadmApp(
        title="omadm server",
        lifespan=lifespan,
        openapi_url=OPENAPI_URL,
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN: ours serves it (docs_ui.py)
        redoc_url=None,
    )
    app.router.routes.extend(docs_routes(OPENAPI_URL, app.title))
    app.router.routes.append(Route("/dm", dm, methods=["POST"], include_in_schema=False))
    # Another management authority's devices: /dm/<authority name> (docs/authorities.md).
    app.router.routes.append(Route("/dm/{authority}", dm, methods=["POST"], include_in_schema=False))
    app.router.routes.append(Route("/health", health, methods=["GET"], include_in_schema=False))
    # /healthz (alive), /readyz (database and schema), /metrics (Prometheus): observability.py.
    app.router.routes.extend(observability_routes(config, engine, sessions))
    app.router.routes.extend(
        artifact_routes(
            sessions, storage, secret, on_install_notify=install_notified, public_url=config.base_url
        )
    )
    app.include_router(api_router, prefix=API_PREFIX)
    app.router.routes.extend(console_routes())
    install_problem_handlers(app)
    app.dm_endpoint = endpoint
    app.state.config = config
    app.state.engine = engine
    app.state.writer = writer
    app.state.dm_rows = endpoint.rows  # the fast path's kept rows (bench/server.py reads its hits)
    app.state.sessions = sessions
    app.state.sweep_lease = sweep_lease(engine, config.port)  # who sweeps (lease.py)
    app.state.storage = storage
    return app


class OmadmApp(FastAPI):
    """The FastAPI app, with ``POST /dm`` and ``POST /dm/<authority>`` handed over first.

    Every DM message is one request, and FastAPI's own layers (exception telemetry, body
    limits, Starlette's middleware stack, the router's walk over the REST routes) cost a
    tenth of a fleet message's CPU for nothing the endpoint uses. So ``__call__`` gives those
    two paths straight to the DM endpoint, which turns an unexpected exception into a logged
    500 itself. The routes stay registered, so another method on ``/dm`` gets the router's
    405 as before.
    """

    dm_endpoint: DMEndpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.dm_endpoint
        if endpoint is not None and scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            name = path[4:] if path.startswith("/dm/") else ""
            if path == "/dm" or (name and "/" not in name):
                scope["path_params"] = {"authority": name} if name else {}
                await _serve_dm(endpoint, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _serve_dm(endpoint: DMEndpoint, scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    try:
        response = await endpoint(request)
    except Exception:
        log.exception("dm: an unexpected error on %s", scope.get("path"))
        response = Response("internal error\n", status_code=500, media_type="text/plain")
    await response(scope, receive, send)


def artifact_locator(config: ServerConfig, storage: ArtifactStorage, secret: bytes) -> PackageLocator:
    """Where a job's package comes from: a signed per-device URL, a DD URL, or the bytes."""

    async def locate(db: AsyncSession, job: Job, device: Device) -> tuple[str | None, bytes | None]:
        params = job.params or {}
        if job.kind not in _BY_URL and job.kind != JobKind.INSTALL_DIRECT.value:
            return None, None
        if params.get("url") and job.kind in _BY_URL:
            return str(params["url"]), None
        artifact_id = params.get("artifact_id")
        if not artifact_id:
            raise LookupError("the job names no artifact and no url")
        artifact = await get_artifact(db, int(artifact_id))
        if job.kind == JobKind.INSTALL_DIRECT.value:
            chunks = [chunk async for chunk in storage.open_range(artifact.storage_key)]
            return None, b"".join(chunks)
        signer = presigner(storage)
        if signer is not None and not params.get("descriptor"):
            # An object store serves the bytes: the store's own URL, presigned now (when the
            # job is sent, so it cannot expire while queued) for [artifacts] presign_expiry.
            url = await signer.presigned_url(
                artifact.storage_key, filename=artifact.filename, content_type=artifact.content_type
            )
            return url, None
        expires = utc_now() + timedelta(seconds=config.url_lifetime)
        if params.get("descriptor"):
            return descriptor_url(
                config.base_url, artifact, device.device_id, expires, secret, correlator=job.correlator
            ), None
        return download_url(config.base_url, artifact, device.device_id, expires, secret), None

    return locate


async def _record_install_notify(
    sessions: async_sessionmaker[AsyncSession], correlator: str, code: int, text_: str
) -> None:
    """A DLOTA install-notify: history only; the Generic Alert stays what finishes the job."""
    from sqlalchemy import select  # noqa: PLC0415 - local: only this rare path needs it

    from .registry import record_event  # noqa: PLC0415

    async with sessions() as db, db.begin():
        job = (await db.execute(select(Job).where(Job.correlator == correlator))).scalar_one_or_none()
        if job is None:
            log.warning("install-notify for unknown correlator %s: %s %s", correlator, code, text_)
            return
        device = await db.get(Device, job.device_pk)
        if device is not None:
            await record_event(db, device, "install-notify", job=job.id, status=code, text=text_)
        if not JobState(job.state).final:
            job.detail = f"install-notify {code} {text_}".strip()
