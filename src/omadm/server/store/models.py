"""The server's tables: devices, DM sessions, SCOMO inventory and jobs, artifacts, history.

One schema for SQLite (the embedded default) and PostgreSQL (production); Alembic migrations
(``omadm/server/store/migrations``) create and evolve it, never ``create_all`` outside tests.
Column types are the portable ones: ``JSON`` for small structured values (DevInfo, job
parameters), ``LargeBinary`` for nonces and session snapshots, timezone-aware timestamps.

Why these tables: a DM session must survive between HTTP requests in *any* worker
(``dm_sessions.snapshot``); a job must be matched to the Generic Alert that finishes it by
Correlator (unique) and never be sent twice (``jobs.state``); the inventory is what the
device last said, one row per Deployed or Delivered entry, so filters such as "has component
X older than 2.0" are queries, not scans of blobs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy import (
    text as sa_text,
)
from sqlalchemy import (
    true as sa_true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from omadm.mo.scomo_codes import DeliveredState, DeliveredStatus, DeployedState, DeployedStatus

from ..version_key import version_key

__all__ = [
    "DEFAULT_AUTHORITY",
    "DEFAULT_AUTHORITY_PK",
    "DEVICE_ID_TYPE",
    "ApiRole",
    "ApiToken",
    "Artifact",
    "AttributeKind",
    "AuditEntry",
    "Authority",
    "Base",
    "Campaign",
    "CampaignDevice",
    "CampaignDeviceState",
    "CampaignState",
    "Device",
    "DeviceAttribute",
    "DeviceEvent",
    "DeviceState",
    "DmSession",
    "InventoryEntry",
    "InventoryKind",
    "Job",
    "JobKind",
    "JobState",
    "Publisher",
    "UTCDateTime",
    "utc_now",
]

#: Constraint names Alembic can rely on, identical on both engines.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time: written as UTC, read back timezone-aware (UTC) on every engine.

    PostgreSQL keeps ``timestamp with time zone`` natively; SQLite has no such type and
    SQLAlchemy's ``DateTime`` drops the offset there, so the value is converted to UTC
    before it is written and marked UTC when it is read. Naive datetimes are refused: the
    store cannot know which zone they meant.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: give it a timezone (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime(), bytes: LargeBinary}


#: The management authority every installation has (migration 0005 creates it with this id):
#: the one the server's configured ``server_id`` names, and the owner of everything made
#: before authorities existed or without naming one.
DEFAULT_AUTHORITY = "default"
DEFAULT_AUTHORITY_PK = 1


class Authority(Base):
    """A management authority: one DM server identity with its own devices, tokens and packages.

    Devices know it by ``server_id`` (the DM ServerID of their DMAcc account and the principal
    of their ACLs). ``server_id`` is NULL for the ``default`` authority only: it is then the
    server's configured ``server_id`` (``[server] server_id``), whatever that is set to.
    """

    __tablename__ = "authorities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    server_id: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


def _authority_pk() -> Mapped[int]:
    """The owning authority (the default one unless given)."""
    return mapped_column(
        ForeignKey("authorities.id"), default=DEFAULT_AUTHORITY_PK, server_default=sa_text("1")
    )


#: A DevId column: compared byte by byte on both engines (see ``Device.device_id``).
DEVICE_ID_TYPE = String(255).with_variant(String(255, collation="C"), "postgresql")


class DeviceState(StrEnum):
    """Admission of a device (issue 5: reject, hold as pending, or accept unknown devices)."""

    PENDING = "pending"  # seen, not yet accepted by an operator: its sessions get no commands
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Device(Base):
    """One DM client of one authority, keyed by its DevId (the SyncHdr Source LocURI).

    The same physical device (one DevId) may be registered by several authorities: each row
    has its own credentials, nonces, inventory, jobs and history.
    """

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    authority_pk: Mapped[int] = _authority_pk()
    # Byte order on PostgreSQL too (``COLLATE "C"``): the device list pages and matches
    # DevId prefixes on this column's index, which needs an order that is plain and the same
    # on both engines (a linguistic collation ignores punctuation, and IMEI:/MAC: have some).
    device_id: Mapped[str] = mapped_column(DEVICE_ID_TYPE)
    state: Mapped[str] = mapped_column(String(16), default=DeviceState.ACCEPTED.value)
    # What the device must present (client credentials) and what we present to it.
    auth_type: Mapped[str] = mapped_column(String(32), default="syncml:auth-md5")
    username: Mapped[str] = mapped_column(String(255), default="")
    password: Mapped[str] = mapped_column(String(255), default="")
    server_password: Mapped[str] = mapped_column(String(255), default="")
    client_nonce: Mapped[bytes] = mapped_column(LargeBinary, default=b"")  # we issued; device uses next
    server_nonce: Mapped[bytes] = mapped_column(LargeBinary, default=b"")  # device issued; we use next
    auth_failures: Mapped[int] = mapped_column(Integer, default=0)
    notify_address: Mapped[str] = mapped_column(String(255), default="")  # udp://h:p or http(s)://...
    last_notified: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    devinfo: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # DevInfo leaf -> value
    devdetail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # name -> value (issue 6)
    scomo_root: Mapped[str] = mapped_column(String(255), default="./SCOMO")
    created: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    last_contact: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    inventory_updated: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # SHA-256 of the last inventory the device reported: an unchanged one is not rewritten.
    inventory_digest: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # Whether the device may have unfinished jobs (set when one is created, cleared when a
    # session finds none): devices without work cost no job query per message.
    has_open_jobs: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())
    # Moved on by every UPDATE (a trigger, migration 0006): the DM fast path writes from a
    # copy of the row kept in memory only while the row still has the version it wrote.
    row_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (
        UniqueConstraint("authority_pk", "device_id", name="uq_devices_authority_device_id"),
        Index("ix_devices_device_id", "device_id"),  # which authorities know a DevId
    )


# The trigger that moves ``devices.row_version`` on (migration 0006 creates it; these make
# ``create_all``, used by some tests, create it too). An UPDATE that sets the version itself
# (the DM fast path's) keeps what it set.
_ROW_VERSION_DDL = {
    "sqlite": (
        "CREATE TRIGGER devices_row_version AFTER UPDATE ON devices "
        "FOR EACH ROW WHEN NEW.row_version = OLD.row_version "
        "BEGIN UPDATE devices SET row_version = OLD.row_version + 1 WHERE id = OLD.id; END",
    ),
    "postgresql": (
        "CREATE FUNCTION devices_row_version() RETURNS trigger AS $$ "
        "BEGIN NEW.row_version := OLD.row_version + 1; RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER devices_row_version BEFORE UPDATE ON devices "
        "FOR EACH ROW WHEN (NEW.row_version = OLD.row_version) EXECUTE FUNCTION devices_row_version()",
    ),
}
for _dialect, _statements in _ROW_VERSION_DDL.items():
    for _statement in _statements:
        event.listen(Device.__table__, "after_create", DDL(_statement).execute_if(dialect=_dialect))  # type: ignore[no-untyped-call]
event.listen(
    Device.__table__,
    "after_drop",
    DDL("DROP FUNCTION IF EXISTS devices_row_version()").execute_if(dialect="postgresql"),  # type: ignore[no-untyped-call]
)


class AttributeKind(StrEnum):
    TAG = "tag"
    DEVINFO = "devinfo"


class DeviceAttribute(Base):
    """One tag or DevInfo value of a device, as a row: what targets and the device list filter on.

    ``devices.tags`` and ``devices.devinfo`` stay the truth (JSON, as the API shows them);
    database triggers (:data:`ATTRIBUTE_TRIGGERS`) keep these rows equal to them on every
    insert and update, whoever writes (the ORM, the DM fast path, SQL). As plain indexed
    columns they give the planner real statistics, so "ring=beta" (600,000 devices) and
    "ring=nobody" (none) each get the plan that suits them, which JSON operators do not.
    Values longer than 255 characters are cut (and compared cut).
    """

    __tablename__ = "device_attributes"

    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))

    __table_args__ = (Index("ix_device_attributes_lookup", "kind", "name", "value", "device_pk"),)


def _sqlite_attribute_rows(column: str, kind: str) -> str:
    return (
        f"INSERT INTO device_attributes (device_pk, kind, name, value) "
        f"SELECT NEW.id, '{kind}', substr(key, 1, 255), substr(CAST(value AS TEXT), 1, 255) "
        f"FROM json_each(NEW.{column}) WHERE json_valid(NEW.{column}) AND json_type(NEW.{column}) = 'object' "
        f"AND type NOT IN ('object', 'array', 'null');"
    )


def _postgresql_attribute_rows(column: str, kind: str) -> str:
    return (
        f"IF jsonb_typeof(NEW.{column}::jsonb) = 'object' THEN "
        f"INSERT INTO device_attributes (device_pk, kind, name, value) "
        f"SELECT NEW.id, '{kind}', left(key, 255), left(value #>> '{{}}', 255) "
        f"FROM jsonb_each(NEW.{column}::jsonb) "
        f"WHERE jsonb_typeof(value) IN ('string', 'number', 'boolean'); END IF;"
    )


#: Statistics over the three columns together (PostgreSQL): "ring=beta" is then estimated as
#: the rows it matches, not as the product of "ring" and "beta" apart (off by 40x at a million).
ATTRIBUTE_STATISTICS = (
    "CREATE STATISTICS device_attributes_kind_name_value (mcv, dependencies) "
    "ON kind, name, value FROM device_attributes"
)

#: The triggers that keep ``device_attributes`` equal to ``devices.tags`` and ``.devinfo``
#: (migration 0007 creates them; ``create_all`` too, below).
_JSON_ATTRIBUTES = (("tags", AttributeKind.TAG), ("devinfo", AttributeKind.DEVINFO))


def _forget_rows(kind: AttributeKind) -> str:
    return f"DELETE FROM device_attributes WHERE device_pk = NEW.id AND kind = '{kind.value}'; "


ATTRIBUTE_TRIGGERS = {
    "sqlite": (
        "CREATE TRIGGER devices_attributes_insert AFTER INSERT ON devices FOR EACH ROW BEGIN "
        + "".join(_sqlite_attribute_rows(column, kind.value) for column, kind in _JSON_ATTRIBUTES)
        + " END",
        *(
            f"CREATE TRIGGER devices_attributes_{column} AFTER UPDATE OF {column} ON devices "
            f"FOR EACH ROW WHEN NEW.{column} IS NOT OLD.{column} BEGIN "
            + _forget_rows(kind)
            + _sqlite_attribute_rows(column, kind.value)
            + " END"
            for column, kind in _JSON_ATTRIBUTES
        ),
    ),
    "postgresql": (
        # A new row has nothing to delete: no DELETE then (its cached plan, made while the
        # table was empty, would scan the whole table for every row of a bulk insert).
        "CREATE FUNCTION devices_attributes() RETURNS trigger AS $$ BEGIN "
        "IF TG_OP = 'INSERT' THEN "
        + "".join(_postgresql_attribute_rows(column, kind.value) for column, kind in _JSON_ATTRIBUTES)
        + " RETURN NULL; END IF; "
        + "".join(
            f"IF NEW.{column}::text IS DISTINCT FROM OLD.{column}::text THEN "
            + _forget_rows(kind)
            + _postgresql_attribute_rows(column, kind.value)
            + " END IF; "
            for column, kind in _JSON_ATTRIBUTES
        )
        + "RETURN NULL; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER devices_attributes AFTER INSERT OR UPDATE OF tags, devinfo ON devices "
        "FOR EACH ROW EXECUTE FUNCTION devices_attributes()",
    ),
}
for _dialect, _statements in ATTRIBUTE_TRIGGERS.items():
    for _statement in _statements:
        event.listen(
            DeviceAttribute.__table__,  # after both tables exist
            "after_create",
            DDL(_statement.replace("%", "%%")).execute_if(dialect=_dialect),  # type: ignore[no-untyped-call]
        )
event.listen(
    DeviceAttribute.__table__,
    "after_create",
    DDL(ATTRIBUTE_STATISTICS).execute_if(dialect="postgresql"),  # type: ignore[no-untyped-call]
)
event.listen(
    DeviceAttribute.__table__,
    "after_drop",
    DDL("DROP FUNCTION IF EXISTS devices_attributes()").execute_if(dialect="postgresql"),  # type: ignore[no-untyped-call]
)


class DmSession(Base):
    """A DM session between HTTP requests: the ServerSession snapshot, keyed by the RespURI token."""

    __tablename__ = "dm_sessions"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(String(64), default="")
    snapshot: Mapped[bytes] = mapped_column(LargeBinary)
    messages: Mapped[int] = mapped_column(Integer, default=0)
    finished: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the server did in this session beside the protocol (inventory asked, jobs sent).
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    updated: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)

    __table_args__ = (
        Index("ix_dm_sessions_updated", "updated"),
        Index("ix_dm_sessions_device_pk", "device_pk"),  # a device's sessions; ON DELETE CASCADE
    )


def _version_key_default(context: Any) -> bytes | None:
    return version_key(str(context.get_current_parameters().get("version") or ""))


class InventoryKind(StrEnum):
    DEPLOYED = "deployed"
    DELIVERED = "delivered"


#: The SCOMO tables that give a Deployed or Delivered entry's State and Status numbers a name.
_STATE_NAMES: dict[str, type[IntEnum]] = {
    InventoryKind.DEPLOYED.value: DeployedState,
    InventoryKind.DELIVERED.value: DeliveredState,
}
_STATUS_NAMES: dict[str, type[IntEnum]] = {
    InventoryKind.DEPLOYED.value: DeployedStatus,
    InventoryKind.DELIVERED.value: DeliveredStatus,
}


def scomo_value_name(table: dict[str, type[IntEnum]], kind: str, value: int | None) -> str | None:
    """The word for a SCOMO State or Status number (``20`` on Deployed: ``active``), else None.

    The same number means different things per entry kind (digest 4.2 and 4.3), so an
    operator cannot read ``20`` alone; a value the tables do not hold (a vendor's) has no name.
    """
    enum = table.get(kind)
    if enum is None or value is None:
        return None
    try:
        return enum(value).name.lower()
    except ValueError:
        return None


class InventoryEntry(Base):
    """One ``Inventory/Deployed/<X>`` or ``Inventory/Delivered/<X>`` entry, as last reported."""

    __tablename__ = "inventory"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    node: Mapped[str] = mapped_column(String(255))  # the <X> name
    ident: Mapped[str] = mapped_column(String(255), default="")  # Deployed ID or Delivered PkgID
    name: Mapped[str] = mapped_column(String(255), default="")
    version: Mapped[str] = mapped_column(String(64), default="")
    # ``version`` in byte order = PEP 440 order (:mod:`omadm.server.version_key`); NULL when
    # it does not parse. Given by the DM writer; derived from ``version`` otherwise.
    version_key: Mapped[bytes | None] = mapped_column(
        LargeBinary, nullable=True, default=_version_key_default
    )
    state: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    env_type: Mapped[str] = mapped_column(String(64), default="")
    pkg_id_ref: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    updated: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)

    @property
    def state_name(self) -> str | None:
        """``state`` as a word: ``active``/``inactive`` (Deployed), ``delivered``/``installed``."""
        return scomo_value_name(_STATE_NAMES, self.kind, self.state)

    @property
    def status_name(self) -> str | None:
        """``status`` as a word: ``idle``, ``activate_failed``, ``install_progressing``, ..."""
        return scomo_value_name(_STATUS_NAMES, self.kind, self.status)

    __table_args__ = (
        UniqueConstraint("device_pk", "kind", "node", name="uq_inventory_device_kind_node"),
        # Targets by component (and version): from the component to its devices, or from a
        # device to its entry of the component (three equal columns: an exact probe).
        Index("ix_inventory_ident_key", "ident", "kind", "device_pk", "version_key"),
    )


class JobKind(StrEnum):
    """What an operator can ask of one device (issue 5, item 6)."""

    INSTALL = "install"  # DownloadInstall by URL (an artifact or an external URL)
    INSTALL_INACTIVE = "install-inactive"  # DownloadInstallInactive
    DOWNLOAD = "download"  # Download only: the package ends under Inventory/Delivered
    INSTALL_DIRECT = "install-direct"  # Delivered/<X>/Data in the session, then Install
    INSTALL_DELIVERED = "install-delivered"  # Install (or InstallInactive) of a Delivered entry
    REMOVE_DELIVERED = "remove-delivered"
    UPDATE = "update"  # DownloadInstall of a newer version of a deployed component
    REMOVE = "remove"  # Remove on Deployed/<X>
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"
    REFRESH_INVENTORY = "refresh-inventory"


class JobState(StrEnum):
    QUEUED = "queued"  # waiting for the device's next session
    SENT = "sent"  # commands are in a server package; no Status yet
    ACCEPTED = "accepted"  # Exec answered 202: the device works on it, the alert will tell
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed-out"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED)


class Job(Base):
    """One SCOMO operation for one device; ``correlator`` ties the Exec to its Generic Alert."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED.value)
    correlator: Mapped[str] = mapped_column(String(64), unique=True)
    exec_uri: Mapped[str] = mapped_column(String(512), default="")
    result_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    campaign_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    session_token: Mapped[str] = mapped_column(String(64), default="")  # the session that sent it
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    updated: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_jobs_device_state", "device_pk", "state"),
        Index("ix_jobs_campaign_state", "campaign_id", "state"),  # a campaign's outcomes, set-based
    )


class Artifact(Base):
    """An uploaded package file: where it is stored, its size and SHA-256, what the manifest says."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    authority_pk: Mapped[int] = _authority_pk()
    filename: Mapped[str] = mapped_column(String(255))
    # Content-addressed: two authorities uploading the same bytes share the blob, not the row.
    storage_key: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(128), default="application/vnd.omadm.package")
    package_id: Mapped[str] = mapped_column(String(255), default="")
    version: Mapped[str] = mapped_column(String(64), default="")
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)

    __table_args__ = (
        UniqueConstraint("authority_pk", "storage_key", name="uq_artifacts_authority_storage_key"),
        Index("ix_artifacts_package", "package_id", "version"),
    )


class DeviceEvent(Base):
    """A device's history: sessions, inventory changes, job transitions, admission decisions."""

    __tablename__ = "device_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (Index("ix_device_events_device_at", "device_pk", "at"),)


class ApiRole(StrEnum):
    """What a REST API token may do: viewers read, operators change the fleet, admins everything."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return ("viewer", "operator", "admin").index(self.value)


class ApiToken(Base):
    """A bearer token of the REST API (issue 6): only its SHA-256 is kept, never the token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    authority_pk: Mapped[int] = _authority_pk()  # what it sees and changes
    name: Mapped[str] = mapped_column(String(100), unique=True)  # who, in the audit log
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the token
    created: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    last_used: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Issue 17, point 8 (migration 0009). When it stops working (None: never).
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When the current secret was issued by a rotation (None: never rotated, see created).
    rotated: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The secret the last rotation replaced: accepted until previous_expires (the grace
    # period), then refused as "rotated" (not "unknown"), which tells its holder what happened.
    previous_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    previous_expires: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_api_tokens_previous_hash", "previous_hash", unique=True),)


class AuditEntry(Base):
    """One change made through the REST API (or the shell): who, what, on what, when."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # Whose log it is in: the authority of the token (or of what the shell changed). No
    # foreign key: the log outlives what it mentions.
    authority_pk: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_AUTHORITY_PK, server_default=sa_text("1")
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    actor: Mapped[str] = mapped_column(String(100))  # the token's name, or shell:<os user>
    action: Mapped[str] = mapped_column(String(64))  # "device.add", "job.cancel", ...
    target: Mapped[str] = mapped_column(String(255), default="")  # "IMEI:...", "job 3", ...
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_authority_at", "authority_pk", "at"),
    )


class CampaignState(StrEnum):
    """Where a campaign is (issue 6): only a running one creates jobs and moves between waves."""

    DRAFT = "draft"  # created, target set and waves fixed, nothing sent
    RUNNING = "running"
    PAUSED = "paused"  # by an operator, or a wave ended below its success threshold
    STOPPED = "stopped"  # a wave crossed its error threshold: nothing more is sent
    CANCELLED = "cancelled"  # by an operator: queued jobs were cancelled
    FINISHED = "finished"  # the last wave reached its success threshold

    @property
    def active(self) -> bool:
        """Holds its devices for its component (a device is in one active campaign per component)."""
        return self in (CampaignState.RUNNING, CampaignState.PAUSED)


class CampaignDeviceState(StrEnum):
    PENDING = "pending"  # no job yet (its wave is not released, outside the window) or a retry is due
    RUNNING = "running"  # its job is not final
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed for good: retries used up or not worth one, timed out
    CANCELLED = "cancelled"  # the campaign stopped or was cancelled before the device got its job


class Campaign(Base):
    """One SCOMO operation on a target set of devices, in waves (:mod:`omadm.server.campaigns`)."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    authority_pk: Mapped[int] = _authority_pk()  # its devices and package are this authority's
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))  # install, update, remove, activate, deactivate
    artifact_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the package kinds
    component_id: Mapped[str] = mapped_column(String(255), default="")  # what it concerns
    target: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the filter, as given
    waves: Mapped[list[Any]] = mapped_column(JSON, default=list)  # counts or "NN%", as given
    success_threshold: Mapped[float] = mapped_column(Float)
    error_threshold: Mapped[float] = mapped_column(Float)
    device_timeout: Mapped[float | None] = mapped_column(Float, nullable=True)  # seconds per job
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    window: Mapped[str | None] = mapped_column(String(32), nullable=True)  # "22:00-04:00" (UTC)
    state: Mapped[str] = mapped_column(String(16), default=CampaignState.DRAFT.value)
    current_wave: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)  # matched but busy in another campaign
    detail: Mapped[str] = mapped_column(Text, default="")  # why it paused, stopped, finished
    created: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    updated: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    started: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_campaigns_state", "state"),
        Index("ix_campaigns_authority_pk", "authority_pk"),
    )


class CampaignDevice(Base):
    """One device of a campaign: its wave, its current job and how it went."""

    __tablename__ = "campaign_devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    wave: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the last job made for it
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # jobs made for it so far
    state: Mapped[str] = mapped_column(String(16), default=CampaignDeviceState.PENDING.value)
    result_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    updated: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)

    __table_args__ = (
        UniqueConstraint("campaign_id", "device_pk", name="uq_campaign_devices_campaign_device"),
        Index("ix_campaign_devices_device_pk", "device_pk"),
        Index("ix_campaign_devices_campaign_wave", "campaign_id", "wave", "state"),
        # From a job to its campaign device: the set-based statements join on it, and with it
        # no plan (even one made on stale statistics) scans the campaign per job.
        Index(
            "ix_campaign_devices_job_id",
            "job_id",
            postgresql_where=sa_text("job_id IS NOT NULL"),
            sqlite_where=sa_text("job_id IS NOT NULL"),
        ),
    )


class Publisher(Base):
    """A publisher key the server vouches for: uploads must be signed by one (issue 15, section 5).

    The trust store of one management authority. ``key_id`` (16 hex digits) is what people
    compare by eye with what ``omadm package keygen`` printed; ``fingerprint`` (the whole
    SHA-256 of the raw key) is what is unique, since 64 bits could be matched on purpose.
    """

    __tablename__ = "publishers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    authority_pk: Mapped[int] = _authority_pk()
    name: Mapped[str] = mapped_column(String(100))
    key_id: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(Text)  # SubjectPublicKeyInfo PEM
    created: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)

    __table_args__ = (
        UniqueConstraint("authority_pk", "name", name="uq_publishers_authority_name"),
        UniqueConstraint("authority_pk", "fingerprint", name="uq_publishers_authority_fingerprint"),
    )
