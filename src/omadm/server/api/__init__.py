"""The REST management API (issue 6), mounted under ``/api/v1``; OpenAPI at ``/api/openapi.json``.

``api_router`` holds the routers: devices, packages, jobs, campaigns, the audit log, tokens
and management authorities. Every route needs a bearer token (:mod:`.auth`); every error is a problem document
(:mod:`.problems`, installed on the app by :func:`install_problem_handlers`).
"""

from __future__ import annotations

from fastapi import APIRouter

from . import audit, authorities, campaigns, devices, jobs, packages
from .problems import install_problem_handlers
from .schemas import ProblemOut

__all__ = ["API_PREFIX", "api_router", "install_problem_handlers"]

API_PREFIX = "/api/v1"

_PROBLEM = {"model": ProblemOut, "description": "A problem document (application/problem+json)."}
api_router = APIRouter(
    responses={
        401: {**_PROBLEM, "description": "No bearer token, or an unknown one."},
        403: {**_PROBLEM, "description": "The token's role (or authority) does not allow it."},
        404: _PROBLEM,
        422: {**_PROBLEM, "description": "The request is not valid; `errors` says where."},
    }
)
api_router.include_router(devices.router)
api_router.include_router(packages.router)
api_router.include_router(jobs.router)
api_router.include_router(campaigns.router)
api_router.include_router(audit.router)
api_router.include_router(audit.tokens_router)
api_router.include_router(audit.whoami_router)
api_router.include_router(authorities.router)
