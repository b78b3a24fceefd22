"""``/healthz``, ``/readyz`` and ``/metrics``: what a load balancer and Prometheus ask a worker.

* ``GET /healthz``: the process is alive and serving HTTP; it touches no database, so a
  database outage does not make an orchestrator restart every worker (which would not help).
* ``GET /readyz``: the worker can do its work: the database answers and its schema is at this
  omadm's migration head. Otherwise 503 with the reason (a load balancer takes the worker
  out of rotation until it is ready again; during an upgrade, workers of the old version
  report "behind" or "unknown revision" until they are replaced).
* ``GET /metrics``: Prometheus text format (:mod:`.metrics`). Open by default, like
  ``/healthz``: it holds counts and no device identifiers (campaign names are the only
  operator text). ``[server] metrics_token`` requires a bearer token (Prometheus'
  ``authorization`` scrape setting sends it); ``metrics = false`` removes the route.

All three stay out of the OpenAPI document: they are for machines, not API clients.
"""

from __future__ import annotations

import asyncio
import hmac

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import metrics
from .config import ServerConfig
from .store.engine import SchemaError, check_schema, mask_url

__all__ = ["READY_TIMEOUT", "observability_routes"]

#: Seconds /readyz waits for the database before it answers 503: a probe must not hang.
READY_TIMEOUT = 5.0


def observability_routes(
    config: ServerConfig, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> list[Route]:
    """The three routes for one worker's app (``/metrics`` only when ``metrics`` is on)."""
    fleet = metrics.FleetCollector(sessions)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.wait_for(_ready(engine), READY_TIMEOUT)
        except SchemaError as exc:
            return _not_ready(f"schema: {exc}")
        except TimeoutError:
            return _not_ready(f"database at {mask_url(engine.url)} did not answer in {READY_TIMEOUT:g} s")
        except Exception as exc:
            return _not_ready(f"database at {mask_url(engine.url)} unreachable: {type(exc).__name__}: {exc}")
        return JSONResponse({"status": "ready"})

    async def scrape(request: Request) -> Response:
        if config.metrics_token and not _token_matches(request, config.metrics_token):
            return Response(
                "GET /metrics needs the metrics token (Authorization: Bearer <metrics_token>)\n",
                status_code=401,
                media_type="text/plain",
                headers={"WWW-Authenticate": 'Bearer realm="omadm metrics"'},
            )
        return Response(await metrics.exposition(fleet), media_type=metrics.CONTENT_TYPE)

    routes = [
        Route("/healthz", healthz, methods=["GET"], include_in_schema=False),
        Route("/readyz", readyz, methods=["GET"], include_in_schema=False),
    ]
    if config.metrics:
        routes.append(Route("/metrics", scrape, methods=["GET"], include_in_schema=False))
    return routes


async def _ready(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    await check_schema(engine)


def _not_ready(reason: str) -> Response:
    return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)


def _token_matches(request: Request, expected: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Constant time: the comparison must not tell how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())
