"""The web console over ASGI on each engine: browsers (cookie jars) logged in per role.

The app is the ``api`` fixture's (``tests/server/api/conftest.py``: one token per role); the
REST API, through :class:`~tests.server.api.conftest.Api`, puts real data in first.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from omadm.package.build import build_package

from ..api import conftest as api_conftest
from ..api.conftest import EXAMPLES, PUBLISHER_KEY, Api

api = api_conftest.api  # the REST API tests' app and tokens, reused as they are

_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@dataclass
class Browser:
    """One operator's browser: a cookie jar, redirects not followed (tests look at them)."""

    http: httpx.AsyncClient
    csrf: str = ""

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        response = await self.http.get(path, **kw)
        if found := _CSRF.search(response.text):
            self.csrf = found.group(1)
        return response

    async def post(
        self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True
    ) -> httpx.Response:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf", self.csrf)
        return await self.http.post(path, data=form)

    async def follow(self, response: httpx.Response) -> httpx.Response:
        """The page a 303 leads to."""
        assert response.status_code == 303, (response.status_code, response.text)
        return await self.get(response.headers["location"])


@dataclass
class Console:
    app: FastAPI
    api: Api
    tokens: dict[str, str]
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def browser(self) -> Browser:
        transport = httpx.ASGITransport(app=self.app)
        http = await self._stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://test")
        )
        return Browser(http)

    async def login(self, role: str) -> Browser:
        """A browser logged in with ``role``'s token, its CSRF token read from the dashboard."""
        browser = await self.browser()
        response = await browser.post("/console/login", {"token": self.tokens[role]}, csrf=False)
        assert response.status_code == 303, response.text
        page = await browser.follow(response)
        assert page.status_code == 200, page.text
        assert browser.csrf
        return browser


@pytest.fixture
async def console(api: Api) -> AsyncIterator[Console]:
    result = Console(api.app, api, api.tokens)
    async with result._stack:
        yield result


@pytest.fixture
def package(tmp_path: Path) -> Path:
    out = tmp_path / "hello-1.0.0.omp"
    build_package(EXAMPLES / "hello-package", out, signing_key=PUBLISHER_KEY)
    return out
