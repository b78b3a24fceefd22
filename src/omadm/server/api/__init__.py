"""The REST management API (issue 6), mounted under ``/api/v1``; OpenAPI at ``/api/openapi.json``.

``api_router`` holds the routers: devices, packages, jobs, campaigns, the audit log, tokens
and management authorities. Every route needs a bearer token (:mod:`.auth`); every error is a problem document
(:mod:`.problems`, installed on the app by :func:`install_problem_handlers`).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

from . import audit, authorities, campaigns, devices, jobs, packages, publishers
from .problems import Problem, install_problem_handlers
from .schemas import ProblemOut

__all__ = ["API_PREFIX", "api_router", "install_problem_handlers"]

API_PREFIX = "/api/v1"

_PROBLEM = {"model": ProblemOut, "description": "A problem document (application/problem+json)."}
_KNOWN_QUERY: dict[int, frozenset[str]] = {}


def _query_names(dependant: Dependant) -> frozenset[str]:
    known = _KNOWN_QUERY.get(id(dependant))
    if known is None:
        names: set[str] = set()
        todo = [dependant]
        while todo:  # the route's own parameters and its dependencies' (paging, filters)
            current = todo.pop()
            names.update(param.alias for param in current.query_params)
            todo.extend(current.dependencies)
        known = _KNOWN_QUERY[id(dependant)] = frozenset(names)
    return known


async def known_query_only(request: Request) -> None:
    """Refuse a query parameter the route does not take (422), instead of ignoring it.

    An ignored filter is worse than an error: ``/jobs?campaign=3`` answering every job looks
    like an answer. Each route's names come from its own declaration (FastAPI's dependant),
    so a new parameter needs nothing here.
    """
    dependant: Dependant | None = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    unknown = sorted(set(request.query_params) - _query_names(dependant))
    if unknown:
        errors: list[dict[str, Any]] = [
            {
                "type": "extra_forbidden",
                "loc": ("query", name),
                "msg": f"unknown query parameter {name!r}",
                "input": request.query_params[name],
            }
            for name in unknown
        ]
        raise RequestValidationError(errors)


_NUL = "\x00"
_NUL_MESSAGE = "holds a NUL character"


def _nul_paths(value: Any, where: tuple[str | int, ...]) -> list[tuple[str | int, ...]]:
    """Where a NUL character is in a parsed JSON value (a key or a string), depth first."""
    found: list[tuple[str | int, ...]] = []
    todo: list[tuple[Any, tuple[str | int, ...]]] = [(value, where)]
    while todo:
        current, at = todo.pop()
        if isinstance(current, str):
            if _NUL in current:
                found.append(at)
        elif isinstance(current, dict):
            for key, item in current.items():
                if _NUL in key:
                    found.append((*at, key))
                todo.append((item, (*at, key)))
        elif isinstance(current, list):
            todo.extend((item, (*at, n)) for n, item in enumerate(current))
    return found


async def no_nul_characters(request: Request) -> None:
    """Refuse a NUL character anywhere in the path, the query or a JSON body (422).

    No DevId, name, tag or URL holds one, and the stores break on it: PostgreSQL's text
    refuses it (a 500 from deep inside a handler), SQLite takes it as the end of a JSON path.
    One check here covers every route, present and future, instead of one per field. A JSON
    body (of a route that takes one) is the one FastAPI has already read, cached on the
    request; it is parsed again only when its bytes hold an escaped NUL (``\\u0000``), since
    the parser refuses raw NUL bytes in a string already. Other bodies (package uploads) are
    left to their handlers.
    """
    found: list[tuple[str | int, ...]] = []
    for name, value in request.path_params.items():
        if isinstance(value, str) and _NUL in value:
            found.append(("path", name))
    for name, value in request.query_params.multi_items():
        if _NUL in name or _NUL in value:
            found.append(("query", name))
    content_type = request.headers.get("content-type", "")
    takes_body = getattr(request.scope.get("route"), "body_field", None) is not None
    if takes_body and "json" in content_type:
        raw = await request.body()
        if b"\\u0000" in raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None  # FastAPI answers an invalid body itself
            found.extend(_nul_paths(body, ("body",)))
    if found:
        # The value is never echoed (it is what cannot be stored or shown), nor a NUL in a name.
        fields = [".".join(str(part).replace(_NUL, "\\0") for part in at) for at in found]
        errors = [{"field": field, "message": _NUL_MESSAGE} for field in fields]
        name = fields[0].partition(".")[2] or fields[0]
        raise Problem(422, f"{name}: {_NUL_MESSAGE} (no DevId, name or value may)", errors=errors)


api_router = APIRouter(
    dependencies=[Depends(known_query_only), Depends(no_nul_characters)],
    responses={
        401: {**_PROBLEM, "description": "No bearer token, or an unknown one."},
        403: {**_PROBLEM, "description": "The token's role (or authority) does not allow it."},
        404: _PROBLEM,
        422: {**_PROBLEM, "description": "The request is not valid; `errors` says where."},
    },
)
api_router.include_router(devices.router)
api_router.include_router(packages.router)
api_router.include_router(jobs.router)
api_router.include_router(campaigns.router)
api_router.include_router(audit.router)
api_router.include_router(audit.tokens_router)
api_router.include_router(audit.whoami_router)
api_router.include_router(authorities.router)
api_router.include_router(publishers.router)
