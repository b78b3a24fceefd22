"""API tokens: an expiry, and rotation with a grace period for the replaced secret.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

Issue 17, point 8. ``expires``: when the token stops working (NULL: never); a request with an
expired token is refused with its own message. ``rotated``: when the current secret was issued
by a rotation. ``previous_hash`` and ``previous_expires``: the secret the last rotation
replaced and until when it is still accepted (the grace period, so that the clients using it
can be moved over); after that it is refused as "rotated", not as an unknown token. A unique
index finds a request's token by its old secret as fast as by its current one.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("expires", sa.DateTime(timezone=True), nullable=True))
    op.add_column("api_tokens", sa.Column("rotated", sa.DateTime(timezone=True), nullable=True))
    op.add_column("api_tokens", sa.Column("previous_hash", sa.String(64), nullable=True))
    op.add_column("api_tokens", sa.Column("previous_expires", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_api_tokens_previous_hash", "api_tokens", ["previous_hash"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_api_tokens_previous_hash", table_name="api_tokens")
    # SQLite cannot drop columns in place on every version: batch mode copies the table.
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("previous_expires")
        batch.drop_column("previous_hash")
        batch.drop_column("rotated")
        batch.drop_column("expires")
