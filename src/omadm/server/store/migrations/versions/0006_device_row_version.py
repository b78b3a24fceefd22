"""Devices carry a row version that every UPDATE moves on (a trigger keeps it).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

The DM fast path keeps the rows it last wrote in memory and skips loading them again for the
device's next message; its write then applies only ``WHERE row_version = <the version it
wrote>``. The trigger moves the version on for *every* other update (the ORM, an operator's
API call, another worker), so a write decided on an outdated copy changes nothing and the
message is served again on the general path. An UPDATE that sets ``row_version`` itself (the
fast path's own writes) is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_TRIGGER = """
CREATE TRIGGER devices_row_version AFTER UPDATE ON devices
FOR EACH ROW WHEN NEW.row_version = OLD.row_version
BEGIN
    UPDATE devices SET row_version = OLD.row_version + 1 WHERE id = OLD.id;
END
"""
POSTGRESQL_FUNCTION = """
CREATE FUNCTION devices_row_version() RETURNS trigger AS $$
BEGIN
    NEW.row_version := OLD.row_version + 1;
    RETURN NEW;
END
$$ LANGUAGE plpgsql
"""
POSTGRESQL_TRIGGER = """
CREATE TRIGGER devices_row_version BEFORE UPDATE ON devices
FOR EACH ROW WHEN (NEW.row_version = OLD.row_version)
EXECUTE FUNCTION devices_row_version()
"""


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("row_version", sa.Integer(), nullable=False, server_default="0"))
    if op.get_context().dialect.name == "postgresql":
        op.execute(POSTGRESQL_FUNCTION)
        op.execute(POSTGRESQL_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS devices_row_version ON devices")
        op.execute("DROP FUNCTION IF EXISTS devices_row_version()")
    else:
        op.execute("DROP TRIGGER IF EXISTS devices_row_version")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("row_version")
