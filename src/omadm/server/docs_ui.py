"""The interactive API docs (Swagger UI) at ``/api/docs``, served from the installed package.

FastAPI's own docs page loads Swagger UI's JavaScript and CSS from a CDN, so on a server
without internet access (a lab, a plant network, an operator's laptop on a train) the page
stays blank. The assets here come from the ``fastapi-offline`` distribution, which ships the
current Swagger UI build (``swagger-ui-bundle.js``, ``swagger-ui.css``) as package data; this
module only serves them, beside a page that names nothing outside this server.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["DOCS_URL", "assets_dir", "docs_routes"]

#: Where the docs page is; its assets are under ``<DOCS_URL>/static``.
DOCS_URL = "/api/docs"

#: The files of the distribution the page uses (checked at start-up, see ``assets_dir``).
_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")


def assets_dir() -> Path:
    """The directory of the Swagger UI files; RuntimeError when the install lacks them.

    Failing when the app is built, not when someone opens the page, turns a broken install
    into a start-up error that names the missing file.
    """
    directory = Path(str(files("fastapi_offline").joinpath("static")))
    missing = [name for name in _ASSETS if not (directory / name).is_file()]
    if missing:
        raise RuntimeError(
            f"the API docs' assets are missing from {directory} ({', '.join(missing)}): "
            "reinstall omadm's dependencies (pip install fastapi-offline)"
        )
    return directory


def docs_routes(openapi_url: str, title: str) -> list[BaseRoute]:
    """``GET /api/docs`` (the page) and ``/api/docs/static/*`` (Swagger UI's files)."""
    static = f"{DOCS_URL}/static"

    async def page(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{title} - API docs",
            swagger_js_url=f"{root}{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{static}/swagger-ui.css",
            swagger_favicon_url=f"{root}{static}/favicon.png",
            # No badge fetched from the public validator: the page stays on this server.
            swagger_ui_parameters={"validatorUrl": None},
        )

    return [
        Route(DOCS_URL, page, methods=["GET"], include_in_schema=False),
        Mount(static, StaticFiles(directory=assets_dir()), name="api-docs-static"),
    ]
