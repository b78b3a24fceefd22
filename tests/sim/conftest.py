"""The simulator's tests use the server's fixtures: ``db_url`` on SQLite and PostgreSQL, and
``api``, the REST API in process with a token per role."""

from __future__ import annotations

from tests.server.api.conftest import api
from tests.server.conftest import anyio_backend, db_url, empty_db_url

__all__ = ["anyio_backend", "api", "db_url", "empty_db_url"]
