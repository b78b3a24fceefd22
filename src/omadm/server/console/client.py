"""The console's way to the data: the REST API, called in process with the operator's token.

Every page and every action goes through :class:`ApiClient`, an ``httpx.AsyncClient`` over
``httpx.ASGITransport`` bound to the running application. Nothing is read from the database
here: the API's roles, its per-authority scoping and its audit log apply to the console
exactly as to ``omadm ctl`` or ``curl``, and there is one implementation of each rule.

A call that the API answers with an error raises :class:`ApiError`, built from the problem
document (``title``, ``detail``, ``errors``), so the pages can show what the API said.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import httpx
from starlette.types import ASGIApp

from ..api import API_PREFIX

__all__ = ["ApiClient", "ApiError"]

Params = dict[str, str | int | list[str]]


class ApiError(Exception):
    """The API answered a call with an error status (or not with JSON at all)."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The problem document of ``response``; a plain message when it is not one."""
        title = response.reason_phrase or "Error"
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            errors = body.get("errors")
            return cls(
                response.status_code,
                str(body.get("title") or title),
                str(body.get("detail") or title),
                errors if isinstance(errors, list) else None,
            )
        return cls(response.status_code, title, f"the API answered {response.status_code} {title}")


class ApiClient:
    """One operator's calls to ``/api/v1`` for one console request (``async with``)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        # raise_app_exceptions=False: an API crash arrives here as its 500 response, which
        # the console shows as an error page instead of crashing itself.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self._http = httpx.AsyncClient(
            transport=transport,
            base_url="http://console",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    async def get(self, path: str, params: Params | None = None) -> Any:
        """The JSON body of ``GET /api/v1{path}``; :class:`ApiError` for an error status."""
        return await self._call("GET", path, params=params)

    async def post(self, path: str, json: dict[str, Any] | None = None) -> Any:
        """The JSON body of ``POST /api/v1{path}``; :class:`ApiError` for an error status."""
        return await self._call("POST", path, json=json)

    async def patch(self, path: str, json: dict[str, Any]) -> Any:
        """The JSON body of ``PATCH /api/v1{path}``; :class:`ApiError` for an error status."""
        return await self._call("PATCH", path, json=json)

    async def delete(self, path: str) -> Any:
        """``DELETE /api/v1{path}`` (None for its 204); :class:`ApiError` for an error status."""
        return await self._call("DELETE", path)

    async def upload(self, path: str, content: AsyncIterator[bytes], params: Params) -> tuple[int, Any]:
        """``POST /api/v1{path}`` with ``content`` as the raw body, passed on as it arrives.

        Returns the status with the JSON body: the packages API says 201 for a new package
        and 200 for bytes it had already, which the console tells the operator.
        """
        response = await self._http.post(
            API_PREFIX + path,
            params=params,
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )
        return response.status_code, self._body(response)

    async def _call(
        self, method: str, path: str, *, params: Params | None = None, json: dict[str, Any] | None = None
    ) -> Any:
        response = await self._http.request(method, API_PREFIX + path, params=params, json=json)
        return self._body(response)

    @staticmethod
    def _body(response: httpx.Response) -> Any:
        if not response.is_success:
            raise ApiError.from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(502, "Bad Gateway", "the API answered with something other than JSON") from None
