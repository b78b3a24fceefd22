"""The operators' web console (issue 6), under ``/console``: a client of the REST API.

Every page and every action is made of calls to ``/api/v1`` in process (``httpx`` over
``ASGITransport`` on the running app) with the operator's own API token, so the API's roles,
its scoping per management authority and its audit log apply unchanged, and no rule is
written twice. Pages are rendered on the server with Jinja2 (autoescaping on); the only
script, ``static/console.js``, refreshes a running campaign and asks before cancelling.
See :mod:`.session` for the login cookie and the CSRF token, :mod:`.views` for the pages.

``console_routes()`` returns the routes for ``create_app`` to add; they stay out of the
OpenAPI document, which describes the API only.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .views import ACTIONS, HERE, PAGES, PREFIX, action, login_form, login_submit, logout, page, root

__all__ = ["PREFIX", "console_routes"]


def console_routes() -> list[BaseRoute]:
    """The console's routes: pages (GET), actions (POST), login, logout and static files."""
    routes: list[BaseRoute] = [
        Route(PREFIX, root, methods=["GET"]),
        Route(PREFIX + "/login", login_form, methods=["GET"]),
        Route(PREFIX + "/login", login_submit, methods=["POST"]),
        Route(PREFIX + "/logout", logout, methods=["POST"]),
        Mount(PREFIX + "/static", StaticFiles(directory=HERE / "static"), name="console-static"),
    ]
    routes += [Route(PREFIX + path, page(handler), methods=["GET"]) for path, handler in PAGES]
    routes += [Route(PREFIX + path, action(handler), methods=["POST"]) for path, handler in ACTIONS]
    return routes
