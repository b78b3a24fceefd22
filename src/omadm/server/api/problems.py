"""Errors of the REST API as RFC 9457 problem documents (``application/problem+json``).

Every error under ``/api`` is one JSON object: ``type`` (``about:blank``: the status says it
all), ``title`` (the status's phrase), ``status`` and ``detail`` (a sentence that names the
problem, e.g. "no device IMEI:1"). Validation errors (422) add ``errors``: where each bad
field is and why. The registry's and the artifact service's errors keep their status.

Only paths under ``/api/`` are answered this way; the DM endpoint and the download routes
keep their own plain responses.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..artifacts.service import ArtifactError
from ..registry import RegistryError

__all__ = ["PROBLEM_TYPE", "Problem", "install_problem_handlers", "problem_response"]

PROBLEM_TYPE = "application/problem+json"


class Problem(Exception):
    """An API error: the HTTP status, a clear ``detail`` and optional extension members."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers
        self.extra = extra


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": _title(status), "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_TYPE)


def _in_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        errors.append({"field": ".".join(loc), "message": str(error.get("msg", "invalid"))})
    return errors


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc.status, exc.detail, headers=exc.headers, **exc.extra)


async def _on_registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    return problem_response(exc.status, exc.message)


async def _on_artifact_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ArtifactError)
    return problem_response(exc.status, exc.reason)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if not _in_api(request):
        return await request_validation_exception_handler(request, exc)
    errors = _field_errors(exc)
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
    return problem_response(422, f"the request is not valid: {summary}", errors=errors)


async def _on_pool_timeout(request: Request, exc: Exception) -> Response:
    """No database connection in time: the server is busy, not broken (503, come back soon).

    On SQLite the worker has one connection; a long transaction (a wave of a big campaign
    released) can keep it past the pool's timeout. The DM endpoint answers such messages 503
    with Retry-After; the API says the same instead of a 500.
    """
    return problem_response(
        503,
        "the server is busy (no database connection in time); retry shortly",
        headers={"Retry-After": "5"},
    )


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if not _in_api(request):
        return await http_exception_handler(request, exc)
    detail = exc.detail if isinstance(exc.detail, str) else _title(exc.status_code)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such resource: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(exc.status_code, detail, headers=dict(exc.headers or {}) or None)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer the API's errors with problem documents."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RegistryError, _on_registry_error)
    app.add_exception_handler(ArtifactError, _on_artifact_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(SQLAlchemyTimeoutError, _on_pool_timeout)
