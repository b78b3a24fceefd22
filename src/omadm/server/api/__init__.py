"""The REST management API (issue 6), mounted under ``/api/v1``; OpenAPI at ``/api/openapi.json``.

``api_router`` holds the routers: devices, packages, jobs, campaigns, the audit log, tokens
and management authorities. Every route needs a bearer token (:mod:`.auth`); every error is a problem document
(:mod:`.problems`, installed on the app by :func:`install_problem_handlers`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

from . import audit, authorities, campaigns, devices, jobs, packages
from .problems import install_problem_handlers
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


api_router = APIRouter(
    dependencies=[Depends(known_query_only)],
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
