"""Queries at fleet size: tags and DevInfo as indexed rows, versions that sort, DevIds in byte order.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

Issue 14: targets and the device list filtered tags and DevInfo in Python (or with JSON
operators no index serves) and compared versions in Python, which does not hold at a million
devices. This revision adds:

* ``device_attributes``: one row per tag and per DevInfo value, kept equal to
  ``devices.tags`` / ``devices.devinfo`` by triggers (both engines), filled here from them;
* ``inventory.version_key``: the version as bytes that sort in PEP 440 order
  (:mod:`omadm.server.version_key`), filled here; the component index becomes
  ``(ident, kind, device_pk, version_key)``;
* ``jobs (campaign_id, state)`` and ``campaign_devices (job_id)``: a campaign's outcomes and
  cancellations are read set-based, joining jobs and campaign devices both ways;
* on PostgreSQL, ``devices.device_id`` in the ``C`` collation, so the list's keyset pages and
  DevId prefix searches run on the index in plain code-point order.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from omadm.server.version_key import version_key

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Frozen copies of what ``store/models.py`` creates for ``create_all`` (a test holds them equal):
#: a migration must not change when the models do.
ATTRIBUTE_TRIGGERS = {
    "sqlite": (
        (
            "CREATE TRIGGER devices_attributes_insert AFTER INSERT ON devices FOR EACH ROW BEGIN "
            "INSERT INTO device_attributes (device_pk, kind, name, value) SELECT NEW.id, 'tag', "
            "substr(key, 1, 255), substr(CAST(value AS TEXT), 1, 255) FROM json_each(NEW.tags) WHERE "
            "json_valid(NEW.tags) AND json_type(NEW.tags) = 'object' AND type NOT IN ('object', "
            "'array', 'null');INSERT INTO device_attributes (device_pk, kind, name, value) SELECT "
            "NEW.id, 'devinfo', substr(key, 1, 255), substr(CAST(value AS TEXT), 1, 255) FROM "
            "json_each(NEW.devinfo) WHERE json_valid(NEW.devinfo) AND json_type(NEW.devinfo) = "
            "'object' AND type NOT IN ('object', 'array', 'null'); END"
        ),
        (
            "CREATE TRIGGER devices_attributes_tags AFTER UPDATE OF tags ON devices FOR EACH ROW "
            "WHEN NEW.tags IS NOT OLD.tags BEGIN DELETE FROM device_attributes WHERE device_pk = "
            "NEW.id AND kind = 'tag'; INSERT INTO device_attributes (device_pk, kind, name, value) "
            "SELECT NEW.id, 'tag', substr(key, 1, 255), substr(CAST(value AS TEXT), 1, 255) FROM "
            "json_each(NEW.tags) WHERE json_valid(NEW.tags) AND json_type(NEW.tags) = 'object' AND "
            "type NOT IN ('object', 'array', 'null'); END"
        ),
        (
            "CREATE TRIGGER devices_attributes_devinfo AFTER UPDATE OF devinfo ON devices FOR EACH "
            "ROW WHEN NEW.devinfo IS NOT OLD.devinfo BEGIN DELETE FROM device_attributes WHERE "
            "device_pk = NEW.id AND kind = 'devinfo'; INSERT INTO device_attributes (device_pk, "
            "kind, name, value) SELECT NEW.id, 'devinfo', substr(key, 1, 255), substr(CAST(value AS "
            "TEXT), 1, 255) FROM json_each(NEW.devinfo) WHERE json_valid(NEW.devinfo) AND "
            "json_type(NEW.devinfo) = 'object' AND type NOT IN ('object', 'array', 'null'); END"
        ),
    ),
    "postgresql": (
        (
            "CREATE FUNCTION devices_attributes() RETURNS trigger AS $$ BEGIN IF TG_OP = 'INSERT' "
            "THEN IF jsonb_typeof(NEW.tags::jsonb) = 'object' THEN INSERT INTO device_attributes "
            "(device_pk, kind, name, value) SELECT NEW.id, 'tag', left(key, 255), left(value #>> "
            "'{}', 255) FROM jsonb_each(NEW.tags::jsonb) WHERE jsonb_typeof(value) IN ('string', "
            "'number', 'boolean'); END IF;IF jsonb_typeof(NEW.devinfo::jsonb) = 'object' THEN INSERT "
            "INTO device_attributes (device_pk, kind, name, value) SELECT NEW.id, 'devinfo', "
            "left(key, 255), left(value #>> '{}', 255) FROM jsonb_each(NEW.devinfo::jsonb) WHERE "
            "jsonb_typeof(value) IN ('string', 'number', 'boolean'); END IF; RETURN NULL; END IF; IF "
            "NEW.tags::text IS DISTINCT FROM OLD.tags::text THEN DELETE FROM device_attributes WHERE "
            "device_pk = NEW.id AND kind = 'tag'; IF jsonb_typeof(NEW.tags::jsonb) = 'object' THEN "
            "INSERT INTO device_attributes (device_pk, kind, name, value) SELECT NEW.id, 'tag', "
            "left(key, 255), left(value #>> '{}', 255) FROM jsonb_each(NEW.tags::jsonb) WHERE "
            "jsonb_typeof(value) IN ('string', 'number', 'boolean'); END IF; END IF; IF "
            "NEW.devinfo::text IS DISTINCT FROM OLD.devinfo::text THEN DELETE FROM device_attributes "
            "WHERE device_pk = NEW.id AND kind = 'devinfo'; IF jsonb_typeof(NEW.devinfo::jsonb) = "
            "'object' THEN INSERT INTO device_attributes (device_pk, kind, name, value) SELECT "
            "NEW.id, 'devinfo', left(key, 255), left(value #>> '{}', 255) FROM "
            "jsonb_each(NEW.devinfo::jsonb) WHERE jsonb_typeof(value) IN ('string', 'number', "
            "'boolean'); END IF; END IF; RETURN NULL; END $$ LANGUAGE plpgsql"
        ),
        (
            "CREATE TRIGGER devices_attributes AFTER INSERT OR UPDATE OF tags, devinfo ON devices "
            "FOR EACH ROW EXECUTE FUNCTION devices_attributes()"
        ),
    ),
}
ATTRIBUTE_STATISTICS = (
    "CREATE STATISTICS device_attributes_kind_name_value (mcv, dependencies) ON kind, name, "
    "value FROM device_attributes"
)

_BACKFILL = {
    "sqlite": (
        "INSERT INTO device_attributes (device_pk, kind, name, value) "
        "SELECT d.id, '{kind}', substr(j.key, 1, 255), substr(CAST(j.value AS TEXT), 1, 255) "
        "FROM devices d, json_each(d.{column}) j "
        "WHERE json_valid(d.{column}) AND json_type(d.{column}) = 'object' "
        "AND j.type NOT IN ('object', 'array', 'null')"
    ),
    "postgresql": (
        "INSERT INTO device_attributes (device_pk, kind, name, value) "
        "SELECT d.id, '{kind}', left(j.key, 255), left(j.value #>> '{{}}', 255) "
        "FROM devices d CROSS JOIN LATERAL jsonb_each("
        "CASE WHEN jsonb_typeof(d.{column}::jsonb) = 'object' "
        "THEN d.{column}::jsonb ELSE '{{}}'::jsonb END) j "
        "WHERE jsonb_typeof(j.value) IN ('string', 'number', 'boolean')"
    ),
}


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    op.create_table(
        "device_attributes",
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.id"],
            name=op.f("fk_device_attributes_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_pk", "kind", "name", name=op.f("pk_device_attributes")),
    )
    op.create_index(
        "ix_device_attributes_lookup", "device_attributes", ["kind", "name", "value", "device_pk"]
    )
    for column, kind in (("tags", "tag"), ("devinfo", "devinfo")):
        op.execute(_BACKFILL[dialect].format(column=column, kind=kind))
    for statement in ATTRIBUTE_TRIGGERS[dialect]:
        op.execute(statement)

    with op.batch_alter_table("inventory") as batch:
        batch.add_column(sa.Column("version_key", sa.LargeBinary(), nullable=True))
    connection = op.get_bind()
    versions = connection.execute(sa.text("SELECT DISTINCT version FROM inventory")).scalars().all()
    for version in versions:
        connection.execute(
            sa.text("UPDATE inventory SET version_key = :key WHERE version = :version"),
            {"key": version_key(version or ""), "version": version},
        )
    op.drop_index("ix_inventory_ident", table_name="inventory")
    op.create_index("ix_inventory_ident_key", "inventory", ["ident", "kind", "device_pk", "version_key"])

    op.create_index("ix_jobs_campaign_state", "jobs", ["campaign_id", "state"])
    op.create_index(  # partial: a campaign's devices are written without a job, at no cost here
        "ix_campaign_devices_job_id",
        "campaign_devices",
        ["job_id"],
        postgresql_where=sa.text("job_id IS NOT NULL"),
        sqlite_where=sa.text("job_id IS NOT NULL"),
    )

    if dialect == "postgresql":
        op.execute('ALTER TABLE devices ALTER COLUMN device_id TYPE VARCHAR(255) COLLATE "C"')
        op.execute(ATTRIBUTE_STATISTICS)
        # The new table's statistics now, not at the next autovacuum: targets plan on them.
        op.execute("ANALYZE device_attributes")
        op.execute("ANALYZE inventory")


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "postgresql":
        op.execute('ALTER TABLE devices ALTER COLUMN device_id TYPE VARCHAR(255) COLLATE "default"')
        op.execute("DROP STATISTICS IF EXISTS device_attributes_kind_name_value")
        op.execute("DROP TRIGGER IF EXISTS devices_attributes ON devices")
        op.execute("DROP FUNCTION IF EXISTS devices_attributes()")
    else:
        for name in ("devices_attributes_insert", "devices_attributes_tags", "devices_attributes_devinfo"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_index("ix_campaign_devices_job_id", table_name="campaign_devices")
    op.drop_index("ix_jobs_campaign_state", table_name="jobs")
    op.drop_index("ix_inventory_ident_key", table_name="inventory")
    op.create_index("ix_inventory_ident", "inventory", ["ident", "version"])
    with op.batch_alter_table("inventory") as batch:
        batch.drop_column("version_key")
    op.drop_index("ix_device_attributes_lookup", table_name="device_attributes")
    op.drop_table("device_attributes")
