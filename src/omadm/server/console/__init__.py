"""The operators' web console (issue 6), under ``/console``: a client of the REST API.

Every page and every action is made of calls to ``/api/v1`` in process (``httpx`` over
``ASGITransport`` on the running app) with the operator's own API token, so the API's roles,
its scoping per management authority and its audit log apply unchanged, and no rule is
written twice. Pages are rendered on the server with Jinja2 (autoescaping on); the only
script, ``static/console.js``, refreshes a running campaign and asks before cancelling.
See :mod:`.session` for the login cookie and the CSRF token, :mod:`.views` for the pages
and the forms (register a device, upload a package, queue a job, preview and create a
campaign), :mod:`.multipart` for the streamed package upload.

``console_routes()`` returns the routes for ``create_app`` to add; they stay out of the
OpenAPI document, which describes the API only.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .views import (
    ACTIONS,
    FORMS,
    HERE,
    PAGES,
    PREFIX,
    action,
    form_page,
    form_submit,
    login_form,
    login_submit,
    logout,
    new_package,
    page,
    root,
    upload_package,
)

__all__ = ["PREFIX", "console_routes"]


def console_routes() -> list[BaseRoute]:
    """The console's routes: pages (GET), forms, actions (POST), login, logout and static files.

    Form pages come before the pages; none is under ``/devices/``, where every path is a DevId's.
    """
    routes: list[BaseRoute] = [
        Route(PREFIX, root, methods=["GET"]),
        Route(PREFIX + "/login", login_form, methods=["GET"]),
        Route(PREFIX + "/login", login_submit, methods=["POST"]),
        Route(PREFIX + "/logout", logout, methods=["POST"]),
        Mount(PREFIX + "/static", StaticFiles(directory=HERE / "static"), name="console-static"),
        Route(PREFIX + "/packages/new", form_page(new_package), methods=["GET"]),
        Route(PREFIX + "/packages/new", upload_package, methods=["POST"]),
    ]
    for path, show, submit in FORMS:
        routes += [
            Route(PREFIX + path, form_page(show), methods=["GET"]),
            Route(PREFIX + path, form_submit(show, submit), methods=["POST"]),
        ]
    routes += [Route(PREFIX + path, page(handler), methods=["GET"]) for path, handler in PAGES]
    routes += [Route(PREFIX + path, action(handler), methods=["POST"]) for path, handler in ACTIONS]
    return routes
