"""The initial schema: devices, DM sessions, inventory, jobs, artifacts, device events.

Revision ID: 0001
Revises:
Create Date: 2025-11-25

Written against ``models.py`` of issue 5; ``tests/server/store`` checks that the two agree on
SQLite and PostgreSQL. Types are spelled out here (not imported from the models) so that this
revision keeps creating the same tables whatever the models become later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _device_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["device_pk"], ["devices.id"], name=op.f(f"fk_{table}_device_pk_devices"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("auth_type", sa.String(32), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password", sa.String(255), nullable=False),
        sa.Column("server_password", sa.String(255), nullable=False),
        sa.Column("client_nonce", sa.LargeBinary(), nullable=False),
        sa.Column("server_nonce", sa.LargeBinary(), nullable=False),
        sa.Column("auth_failures", sa.Integer(), nullable=False),
        sa.Column("notify_address", sa.String(255), nullable=False),
        _when("last_notified", nullable=True),
        sa.Column("devinfo", sa.JSON(), nullable=False),
        sa.Column("devdetail", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("scomo_root", sa.String(255), nullable=False),
        _when("created"),
        _when("last_contact", nullable=True),
        _when("inventory_updated", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("device_id", name=op.f("uq_devices_device_id")),
    )
    op.create_table(
        "dm_sessions",
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("snapshot", sa.LargeBinary(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("finished", sa.Boolean(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        _when("created"),
        _when("updated"),
        _device_fk("dm_sessions"),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_dm_sessions")),
    )
    op.create_index("ix_dm_sessions_updated", "dm_sessions", ["updated"])
    op.create_index("ix_dm_sessions_device_pk", "dm_sessions", ["device_pk"])
    op.create_table(
        "inventory",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("ident", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("state", sa.Integer(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("env_type", sa.String(64), nullable=False),
        sa.Column("pkg_id_ref", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        _when("updated"),
        _device_fk("inventory"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inventory")),
        sa.UniqueConstraint("device_pk", "kind", "node", name="uq_inventory_device_kind_node"),
    )
    op.create_index("ix_inventory_ident", "inventory", ["ident", "version"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("correlator", sa.String(64), nullable=False),
        sa.Column("exec_uri", sa.String(512), nullable=False),
        sa.Column("result_code", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("session_token", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("created"),
        _when("updated"),
        _when("sent_at", nullable=True),
        _when("accepted_at", nullable=True),
        _when("finished_at", nullable=True),
        _when("deadline", nullable=True),
        _device_fk("jobs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("correlator", name=op.f("uq_jobs_correlator")),
    )
    op.create_index("ix_jobs_device_state", "jobs", ["device_pk", "state"])
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("storage_key", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("package_id", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        _when("created"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("storage_key", name=op.f("uq_artifacts_storage_key")),
    )
    op.create_index("ix_artifacts_package", "artifacts", ["package_id", "version"])
    op.create_table(
        "device_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        _when("at"),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        _device_fk("device_events"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_events")),
    )
    op.create_index("ix_device_events_device_at", "device_events", ["device_pk", "at"])


def downgrade() -> None:
    op.drop_table("device_events")
    op.drop_table("artifacts")
    op.drop_table("jobs")
    op.drop_table("inventory")
    op.drop_table("dm_sessions")
    op.drop_table("devices")
