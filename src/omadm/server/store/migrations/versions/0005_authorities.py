"""Management authorities: each a DM server identity with its own devices, tokens and packages.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

``authorities`` (name, the ServerID devices know it by, a description) starts with one row,
``default`` (id 1, ``server_id`` NULL: the server's configured ``server_id``). ``devices``,
``api_tokens``, ``artifacts``, ``campaigns`` and ``audit_log`` gain ``authority_pk`` (NOT NULL,
existing rows land in ``default``); jobs, inventory, sessions and history follow their device.
A DevId is unique per authority, not globally: two authorities may register the same device,
each with its own credentials. Identical package bytes are one row per authority (the blob in
storage is shared). On SQLite the tables are rebuilt (batch mode) with foreign keys off, as
:mod:`omadm.server.store.migrate` runs every migration.

Downgrading refuses while a DevId is registered twice (the old schema cannot hold it) and
folds everything into one fleet: the rows keep their data, the authorities go.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_PK = 1
#: Tables that belong to an authority through a foreign key.
_OWNED = ("devices", "api_tokens", "artifacts", "campaigns")


def _authority_column() -> sa.Column[int]:
    return sa.Column("authority_pk", sa.Integer(), nullable=False, server_default=sa.text(str(DEFAULT_PK)))


def upgrade() -> None:
    authorities = op.create_table(
        "authorities",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("server_id", sa.String(255), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_authorities")),
        sa.UniqueConstraint("name", name=op.f("uq_authorities_name")),
        sa.UniqueConstraint("server_id", name=op.f("uq_authorities_server_id")),
    )
    assert authorities is not None
    bind = op.get_bind()
    # The created time as UTC, written the way the models write it (naive UTC on SQLite).
    now = datetime.now(UTC)
    if bind.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    op.execute(
        authorities.insert().values(
            id=DEFAULT_PK,
            name="default",
            server_id=None,
            description="The server's own identity (its configured server_id).",
            created=now,
        )
    )
    if bind.dialect.name == "postgresql":  # the explicit id did not advance the sequence
        op.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence('authorities', 'id'),"
                " (SELECT max(id) FROM authorities))"
            )
        )

    for table in _OWNED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(_authority_column())
            batch.create_foreign_key(
                op.f(f"fk_{table}_authority_pk_authorities"), "authorities", ["authority_pk"], ["id"]
            )
            if table == "devices":
                batch.drop_constraint("uq_devices_device_id", type_="unique")
                batch.create_unique_constraint(
                    "uq_devices_authority_device_id", ["authority_pk", "device_id"]
                )
            elif table == "artifacts":
                batch.drop_constraint("uq_artifacts_storage_key", type_="unique")
                batch.create_unique_constraint(
                    "uq_artifacts_authority_storage_key", ["authority_pk", "storage_key"]
                )
    op.create_index("ix_devices_device_id", "devices", ["device_id"])
    op.create_index("ix_campaigns_authority_pk", "campaigns", ["authority_pk"])
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(_authority_column())
    op.create_index("ix_audit_log_authority_at", "audit_log", ["authority_pk", "at"])


def downgrade() -> None:
    bind = op.get_bind()
    for table, column in (("devices", "device_id"), ("artifacts", "storage_key")):
        twice = bind.execute(
            sa.text(f"SELECT {column} FROM {table} GROUP BY {column} HAVING count(*) > 1 LIMIT 3")
        ).scalars()
        shared = list(twice)
        if shared:
            raise RuntimeError(
                f"cannot downgrade below 0005: {table} has {column} values registered by several "
                f"authorities ({', '.join(map(str, shared))}); remove the extra rows first"
            )
    op.drop_index("ix_audit_log_authority_at", table_name="audit_log")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("authority_pk")
    op.drop_index("ix_campaigns_authority_pk", table_name="campaigns")
    op.drop_index("ix_devices_device_id", table_name="devices")
    for table in reversed(_OWNED):
        with op.batch_alter_table(table) as batch:
            if table == "devices":
                batch.drop_constraint("uq_devices_authority_device_id", type_="unique")
                batch.create_unique_constraint(op.f("uq_devices_device_id"), ["device_id"])
            elif table == "artifacts":
                batch.drop_constraint("uq_artifacts_authority_storage_key", type_="unique")
                batch.create_unique_constraint(op.f("uq_artifacts_storage_key"), ["storage_key"])
            batch.drop_constraint(op.f(f"fk_{table}_authority_pk_authorities"), type_="foreignkey")
            batch.drop_column("authority_pk")
    op.drop_table("authorities")
