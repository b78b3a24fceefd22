"""Devices remember their last inventory digest and whether they may have open jobs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Both let the DM endpoint skip work on the common message: an inventory that did not change is
not rewritten, and a device with no unfinished job costs no job query. Existing devices start
with ``has_open_jobs`` true (the next session finds out) and an empty digest.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("inventory_digest", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("has_open_jobs", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("has_open_jobs")
        batch.drop_column("inventory_digest")
