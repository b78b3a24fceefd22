"""The device registry and job creation: what operators (CLI, REST API, campaigns) change.

Plain async functions over an ``AsyncSession``; the caller owns the transaction. Errors are
``RegistryError`` with an HTTP-like status (404 unknown, 409 conflict, 422 invalid) and a
message that names the problem, so the CLI and the REST API can show them as they are.

Management authorities (``docs/authorities.md``): every device belongs to one authority, a
DM server identity (ServerID). A DevId is unique *within* an authority; functions that look a
device up take ``authority_pk`` (the ``default`` authority when not given, so callers that
predate authorities keep working). The DM endpoint resolves the authority a session talks to
with :func:`resolve_authority` and then the device with :func:`find_device`.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Insert, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from omadm.protocol.auth import new_nonce
from omadm.protocol.codes import AuthType

from .jobs import plan_job
from .store.models import (
    DEFAULT_AUTHORITY,
    DEFAULT_AUTHORITY_PK,
    ApiToken,
    Artifact,
    Authority,
    Campaign,
    CampaignDevice,
    Device,
    DeviceEvent,
    DeviceState,
    InventoryEntry,
    InventoryKind,
    Job,
    JobKind,
    JobState,
    utc_now,
)
from .url_policy import UrlRefused, check_notify_address, check_package_url

__all__ = [
    "AUTH_TYPES",
    "DEFAULT_AUTHORITY",
    "DEFAULT_AUTHORITY_PK",
    "MAX_BULK_DEVICES",
    "BulkRefused",
    "NewDevice",
    "RegistryError",
    "add_authority",
    "add_device",
    "add_devices",
    "authority_usage",
    "cancel_job",
    "check_job",
    "create_job",
    "delete_authority",
    "delete_device",
    "event_text",
    "find_authority",
    "find_device",
    "get_authority",
    "list_authorities",
    "new_server_password",
    "raise_open_jobs",
    "record_event",
    "refresh_statistics",
    "resolve_authority",
    "update_device",
]

#: Configuration names of the DM authentication schemes.
AUTH_TYPES = {"md5": AuthType.MD5, "hmac": AuthType.HMAC, "basic": AuthType.BASIC}
_NEEDS_PACKAGE = {
    JobKind.INSTALL,
    JobKind.INSTALL_INACTIVE,
    JobKind.DOWNLOAD,
    JobKind.UPDATE,
    JobKind.INSTALL_DIRECT,
}
_ON_COMPONENT = {JobKind.REMOVE, JobKind.ACTIVATE, JobKind.DEACTIVATE, JobKind.UPDATE}


class RegistryError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message


class BulkRefused(RegistryError):
    """A batch of devices refused as a whole; ``device_ids`` are the ones at fault, in order."""

    def __init__(self, status: int, message: str, device_ids: list[str]) -> None:
        super().__init__(status, message)
        self.device_ids = device_ids


async def find_device(
    db: AsyncSession,
    device_id: str,
    *,
    authority_pk: int = DEFAULT_AUTHORITY_PK,
    for_update: bool = False,
) -> Device | None:
    """The device with this DevId in this authority (the default one unless given), or None."""
    query = select(Device).where(Device.authority_pk == authority_pk, Device.device_id == device_id)
    if for_update:
        query = query.with_for_update()
    result = await db.execute(query)
    return result.scalar_one_or_none()


# ------------------------------------------------------------------ authorities

_AUTHORITY_NAME_MAX = 100
_SERVER_ID_MAX = 255


async def find_authority(db: AsyncSession, name: str) -> Authority | None:
    """The authority with this name, or None."""
    result: Authority | None = await db.scalar(select(Authority).where(Authority.name == name))
    return result


async def get_authority(db: AsyncSession, name: str) -> Authority:
    """The authority with this name; :class:`RegistryError` 404 when there is none."""
    authority = await find_authority(db, name)
    if authority is None:
        raise RegistryError(404, f"no authority {name!r}")
    return authority


async def resolve_authority(
    db: AsyncSession, server_id: str, *, configured_server_id: str
) -> Authority | None:
    """The authority a DM session talks to, from the ServerID (or the name) it is addressed by.

    ``server_id`` is matched against the authorities' ServerIDs, then their names; the
    server's own ``configured_server_id`` (``[server] server_id``) and an empty string mean
    the ``default`` authority (whose ``server_id`` column is NULL). None: no such authority
    (the DM endpoint should answer as for an unknown server, never create one).
    """
    if not server_id or server_id == configured_server_id:
        return await db.get(Authority, DEFAULT_AUTHORITY_PK)
    by_server_id = await db.scalar(select(Authority).where(Authority.server_id == server_id))
    if by_server_id is not None:
        return by_server_id
    return await find_authority(db, server_id)


async def list_authorities(db: AsyncSession) -> list[Authority]:
    return list((await db.scalars(select(Authority).order_by(Authority.id))).all())


async def add_authority(
    db: AsyncSession,
    name: str,
    server_id: str,
    *,
    description: str = "",
    configured_server_id: str | None = None,
) -> Authority:
    """A new management authority known to its devices by ``server_id`` (a DM ServerID).

    The ServerID must differ from every other authority's and from the server's own
    ``configured_server_id`` (the default authority's), or sessions could not be told apart.
    """
    name, server_id = name.strip(), server_id.strip()
    if not name or len(name) > _AUTHORITY_NAME_MAX or "/" in name or any(c.isspace() for c in name):
        raise RegistryError(
            422, f"an authority needs a name of 1-{_AUTHORITY_NAME_MAX} characters, without spaces or '/'"
        )
    if not server_id or len(server_id) > _SERVER_ID_MAX:
        raise RegistryError(
            422, f"an authority needs the ServerID its devices know it by (1-{_SERVER_ID_MAX} characters)"
        )
    if await find_authority(db, name) is not None:
        raise RegistryError(409, f"an authority named {name!r} exists already")
    if server_id == configured_server_id:
        raise RegistryError(409, f"ServerID {server_id!r} is the server's own (the default authority's)")
    taken = await db.scalar(select(Authority.name).where(Authority.server_id == server_id))
    if taken is not None:
        raise RegistryError(409, f"ServerID {server_id!r} is authority {taken!r}'s already")
    authority = Authority(name=name, server_id=server_id, description=description, created=utc_now())
    db.add(authority)
    await db.flush()
    return authority


async def authority_usage(db: AsyncSession, authority: Authority) -> dict[str, int]:
    """How many devices, tokens, packages and campaigns the authority has."""
    usage = {}
    for label, model in (
        ("devices", Device),
        ("tokens", ApiToken),
        ("packages", Artifact),
        ("campaigns", Campaign),
    ):
        count = await db.scalar(
            select(func.count()).select_from(model).where(model.authority_pk == authority.id)
        )
        usage[label] = count or 0
    return usage


async def delete_authority(db: AsyncSession, authority: Authority) -> Authority:
    """Delete an authority that owns nothing any more; ``default`` is never deleted."""
    if authority.id == DEFAULT_AUTHORITY_PK:
        raise RegistryError(409, "the default authority cannot be deleted")
    usage = await authority_usage(db, authority)
    left = [f"{count} {label}" for label, count in usage.items() if count]
    if left:
        raise RegistryError(
            409, f"authority {authority.name!r} still has {', '.join(left)}: remove them first"
        )
    await db.delete(authority)
    await db.flush()
    return authority


async def add_device(
    db: AsyncSession,
    device_id: str,
    *,
    username: str,
    password: str,
    auth: str = "md5",
    server_password: str = "",
    state: DeviceState = DeviceState.ACCEPTED,
    notify_address: str = "",
    tags: dict[str, Any] | None = None,
    authority_pk: int = DEFAULT_AUTHORITY_PK,
    allow_local_urls: bool = False,
    generate_server_password: bool = False,
) -> Device:
    """Pre-register a device with the credentials it will present (CLCRED), in one authority.

    The same DevId may be registered in another authority (its own row and credentials).
    A ``notify_address`` must pass the URL policy (:mod:`omadm.server.url_policy`) and needs
    a server password: without one the device cannot verify a Package #0 and ignores it.
    ``generate_server_password``: make one (the caller shows it once, as
    ``device.server_password``); otherwise its absence is refused (422).
    """
    if not device_id:
        raise RegistryError(422, "a device needs its DevId (e.g. IMEI:490154203237518)")
    if auth not in AUTH_TYPES:
        raise RegistryError(422, f"auth must be one of {', '.join(AUTH_TYPES)}, not {auth!r}")
    if notify_address:
        try:
            check_notify_address(notify_address, allow_local=allow_local_urls)
        except UrlRefused as exc:
            raise RegistryError(422, str(exc)) from None
        if not server_password:
            if not generate_server_password:
                raise RegistryError(422, _NEEDS_SERVER_PASSWORD)
            server_password = new_server_password()
    if await find_device(db, device_id, authority_pk=authority_pk) is not None:
        raise RegistryError(409, f"device {device_id} is already registered")
    device = Device(
        authority_pk=authority_pk,
        device_id=device_id,
        state=state.value,
        auth_type=AUTH_TYPES[auth].value,
        username=username,
        password=password,
        server_password=server_password,
        notify_address=notify_address,
        tags=tags or {},
        devinfo={},
        devdetail={},
        # A fresh nonce, never an empty one: a digest over an empty nonce never changes, so
        # a captured first message could be replayed for ever. The first session is challenged.
        client_nonce=new_nonce(),
        server_nonce=b"",
        # No job yet: its first session need not look for one (create_job raises the flag),
        # so a fleet's first contact stays on the DM fast path.
        has_open_jobs=False,
    )
    db.add(device)
    await db.flush()
    await record_event(db, device, "registered", state=state.value)
    return device


#: The fields :func:`update_device` never reports the value of.
_SECRET_FIELDS = ("password", "server_password")


async def update_device(
    db: AsyncSession,
    device: Device,
    *,
    username: str | None = None,
    password: str | None = None,
    auth: str | None = None,
    server_password: str | None = None,
    notify_address: str | None = None,
    tags: dict[str, Any] | None = None,
    allow_local_urls: bool = False,
    generate_server_password: bool = False,
) -> dict[str, Any]:
    """Change a registered device's credentials, notification address or tags, in place.

    A device's life outlasts its first credentials: a password leaks, a device moves to
    HMAC, its Package #0 listener gets a new address. The same rules as at registration
    (:func:`add_device`) hold for the result: a known ``auth``, a notification address that
    passes the URL policy and has a server password beside it (made here with
    ``generate_server_password`` when none is given, which the caller then shows once;
    otherwise a 422, as is removing the server password of a device that keeps its
    notification address). An empty ``notify_address`` removes it.

    Returns what changed, for the audit log and the device's history: field names with
    their new values, secrets only as ``"changed"``. Raises :class:`RegistryError` (422)
    naming the field at fault; nothing is changed then.
    """
    if auth is not None and auth not in AUTH_TYPES:
        raise RegistryError(422, f"auth must be one of {', '.join(AUTH_TYPES)}, not {auth!r}")
    new_notify = device.notify_address if notify_address is None else notify_address
    kept_server_password = device.server_password if server_password is None else server_password
    if notify_address:
        try:
            check_notify_address(notify_address, allow_local=allow_local_urls)
        except UrlRefused as exc:
            raise RegistryError(422, str(exc)) from None
    if new_notify and not kept_server_password:
        if not generate_server_password or server_password is not None:  # "" given: a removal
            raise RegistryError(422, _NEEDS_SERVER_PASSWORD)
        server_password = new_server_password()
    wanted: dict[str, Any] = {
        "username": username,
        "password": password,
        "auth_type": AUTH_TYPES[auth].value if auth is not None else None,
        "server_password": server_password,
        "notify_address": notify_address,
        "tags": dict(tags) if tags is not None else None,
    }
    changed: dict[str, Any] = {}
    for name, value in wanted.items():
        if value is None or getattr(device, name) == value:
            continue
        setattr(device, name, value)
        if name in _SECRET_FIELDS:
            changed[name] = "changed"
        elif name == "auth_type":
            changed["auth"] = auth
        else:
            changed[name] = value
    if changed:
        await db.flush()
        await record_event(db, device, "updated", **changed)
    return changed


async def delete_device(db: AsyncSession, device: Device) -> dict[str, int]:
    """Remove a device with everything that is its own: jobs, inventory, attributes, history,
    DM sessions and campaign memberships (the foreign keys cascade, in the database).

    Refused (409) while one of its jobs is sent and not finished (``sent`` or ``accepted``):
    the device works on it and will report a result nobody could then read, and a campaign
    would lose a device it counts as running. Nothing is cancelled here on the operator's
    behalf: the refusal names the jobs to cancel or wait for. Queued jobs, never sent, go
    with the device.

    Returns how many jobs and campaign memberships went with it (for the audit log). The
    caller should hold the device's row lock (``for_update``), so that no session sends it
    a job between the check and the delete.
    """
    busy = (
        await db.scalars(
            select(Job.id)
            .where(
                Job.device_pk == device.id,
                Job.state.in_((JobState.SENT.value, JobState.ACCEPTED.value)),
            )
            .order_by(Job.id)
        )
    ).all()
    if busy:
        named = ", ".join(str(job_id) for job_id in busy)
        raise RegistryError(
            409,
            f"device {device.device_id} is working on job(s) {named}: cancel them or wait until "
            "they finish, then delete it",
        )
    jobs = await db.scalar(select(func.count()).select_from(Job).where(Job.device_pk == device.id)) or 0
    campaigns = (
        await db.scalar(
            select(func.count()).select_from(CampaignDevice).where(CampaignDevice.device_pk == device.id)
        )
        or 0
    )
    await db.execute(
        delete(Device).where(Device.id == device.id).execution_options(synchronize_session=False)
    )
    db.expunge(device)
    return {"jobs": int(jobs), "campaigns": int(campaigns)}


_NEEDS_SERVER_PASSWORD = (
    "a notification address needs a server password (SRVCRED): the device verifies each "
    "Package #0 with it and ignores one it cannot verify; give server_password (--server-password)"
)


def new_server_password() -> str:
    """A server password (SRVCRED AAuthSecret) for an operator who gave none: 128 random bits."""
    return secrets.token_urlsafe(16)


#: The most devices :func:`add_devices` takes at once: one transaction of a few seconds at
#: most on a small machine, and a request of a few MB.
MAX_BULK_DEVICES = 10_000
#: How many offending DevIds a refusal's message names (the exception carries them all).
_NAMED_IN_MESSAGE = 10


@dataclass(frozen=True, slots=True)
class NewDevice:
    """One device of a batch for :func:`add_devices`: what :func:`add_device` takes for one."""

    device_id: str
    username: str
    password: str
    auth: str = "md5"
    server_password: str = ""
    notify_address: str = ""
    tags: dict[str, Any] = field(default_factory=dict)


#: A batch at least this large refreshes the planner's statistics (PostgreSQL).
ANALYZE_AFTER = 1000


def _named(device_ids: list[str]) -> str:
    shown = ", ".join(device_ids[:_NAMED_IN_MESSAGE])
    more = len(device_ids) - _NAMED_IN_MESSAGE
    return f"{shown} and {more} more" if more > 0 else shown


async def add_devices(
    db: AsyncSession,
    devices: Sequence[NewDevice],
    *,
    state: DeviceState = DeviceState.ACCEPTED,
    authority_pk: int = DEFAULT_AUTHORITY_PK,
    allow_local_urls: bool = False,
) -> int:
    """Pre-register a batch of devices in one authority: all of them, or none.

    The rows are those :func:`add_device` makes, one by one (same state, authentication
    type, credentials, a fresh client nonce each, ``has_open_jobs`` clear, a ``registered``
    history event), written with two multi-row INSERTs instead of an ORM object and a flush
    per device, so that a fleet of 10,000 takes about a second, not minutes. Returns how many.

    Refused whole (:class:`BulkRefused`, naming the DevIds at fault): an empty or too large
    batch or an unknown ``auth`` (422), a DevId twice in the batch (422), a DevId this
    authority has already (409). The last is found by the INSERT itself (``ON CONFLICT DO
    NOTHING`` on the authority's unique DevIds; what it did not return existed), not by a
    lookup first: on PostgreSQL a 1,000-value ``IN`` list over a growing table took seconds
    per batch (measured: 2.4 s with 10,000 rows, 4.6 s with 20,000), and the INSERT also
    sees a device a concurrent request has just registered. The caller's transaction must
    then be rolled back (raising out of ``db.begin()`` does it): the batch's other rows are in it.
    """
    if not devices:
        raise BulkRefused(422, "a batch needs at least one device", [])
    if len(devices) > MAX_BULK_DEVICES:
        raise BulkRefused(
            422, f"a batch holds at most {MAX_BULK_DEVICES} devices, not {len(devices)}: split it", []
        )
    unnamed = [str(n) for n, d in enumerate(devices) if not d.device_id]
    if unnamed:
        raise BulkRefused(
            422, f"every device needs its DevId; these (by position from 0) have none: {_named(unnamed)}", []
        )
    bad_auth = [d.device_id for d in devices if d.auth not in AUTH_TYPES]
    if bad_auth:
        raise BulkRefused(
            422, f"auth must be one of {', '.join(AUTH_TYPES)}; not so for {_named(bad_auth)}", bad_auth
        )
    bad_notify: dict[str, str] = {}
    for d in devices:
        if d.notify_address:
            try:
                check_notify_address(d.notify_address, allow_local=allow_local_urls)
            except UrlRefused as exc:
                bad_notify[d.device_id] = str(exc)
    if bad_notify:
        first = next(iter(bad_notify.values()))
        named = _named(list(bad_notify))
        raise BulkRefused(422, f"refused notification addresses for {named}: {first}", list(bad_notify))
    # A batch answers with a count only, so a generated password could not be shown: refused.
    no_password = [d.device_id for d in devices if d.notify_address and not d.server_password]
    if no_password:
        raise BulkRefused(422, f"{_NEEDS_SERVER_PASSWORD}; missing for {_named(no_password)}", no_password)
    ids = [d.device_id for d in devices]
    repeated = [device_id for device_id, n in Counter(ids).items() if n > 1]
    if repeated:
        raise BulkRefused(
            422, f"{len(repeated)} DevId(s) appear more than once in the batch: {_named(repeated)}", repeated
        )
    now = utc_now()
    rows = [
        {
            "authority_pk": authority_pk,
            "device_id": d.device_id,
            "state": state.value,
            "auth_type": AUTH_TYPES[d.auth].value,
            "username": d.username,
            "password": d.password,
            "server_password": d.server_password,
            "notify_address": d.notify_address,
            "tags": dict(d.tags),
            "devinfo": {},
            "devdetail": {},
            "scomo_root": "./SCOMO",
            # Never an empty nonce (see add_device): each device's first session is challenged.
            "client_nonce": new_nonce(),
            "server_nonce": b"",
            "auth_failures": 0,
            "inventory_digest": "",
            "has_open_jobs": False,  # as add_device: no job yet (create_job raises the flag)
            "row_version": 0,
            "created": now,
        }
        for d in devices
    ]
    statement = _insert_new_devices(db.get_bind().dialect.name)
    inserted = (await db.execute(statement.returning(Device.id, Device.device_id), rows)).all()
    if len(inserted) != len(rows):
        new = {device_id for _, device_id in inserted}
        existing = [device_id for device_id in ids if device_id not in new]
        raise BulkRefused(
            409,
            f"{len(existing)} device(s) of the batch are already registered: {_named(existing)}",
            existing,
        )
    device_pks = [pk for pk, _ in inserted]
    detail = {"state": state.value}
    await db.execute(
        insert(DeviceEvent),
        [{"device_pk": pk, "kind": "registered", "detail": detail, "at": now} for pk in device_pks],
    )
    # A campaign or a filtered list right after a fleet's registration is planned on these
    # (with none, PostgreSQL takes a tag as matching one row and nests loops over 40,000
    # devices: minutes, not a second).
    await refresh_statistics(db, len(device_pks), "devices", "device_attributes")
    return len(device_pks)


async def refresh_statistics(db: AsyncSession, rows: int, *tables: str) -> None:
    """``ANALYZE`` the tables when a statement just wrote ``rows`` >= :data:`ANALYZE_AFTER`
    rows to them (PostgreSQL; SQLite plans without statistics).

    Until autovacuum's next pass (a minute or more) the planner would judge a table by what
    it held before, take a fleet's worth of new rows for a handful and nest loops over them:
    a campaign's cancel planned so took minutes instead of a second. The sample includes
    the caller's own uncommitted rows; it costs ~0.1-0.3 s at a million rows, so small
    writes (a retry's few jobs, each sweep) do not pay it.
    """
    if rows >= ANALYZE_AFTER and db.get_bind().dialect.name == "postgresql":
        await db.execute(text(f"ANALYZE {', '.join(tables)}"))


def _insert_new_devices(dialect: str) -> Insert:
    """INSERT INTO devices that skips a DevId the authority has already (both engines say it alike)."""
    conflict = [Device.authority_pk, Device.device_id]  # uq_devices_authority_device_id
    if dialect == "postgresql":
        return postgresql.insert(Device).on_conflict_do_nothing(index_elements=conflict)
    if dialect == "sqlite":
        return sqlite.insert(Device).on_conflict_do_nothing(index_elements=conflict)
    raise RegistryError(500, f"bulk registration supports SQLite and PostgreSQL, not {dialect}")


async def record_event(db: AsyncSession, device: Device, what: str, **detail: Any) -> None:
    """Append to the device's history (:func:`event_text` says it in words)."""
    db.add(DeviceEvent(device_pk=device.id, kind=what, detail=detail, at=utc_now()))


def _job_words(detail: dict[str, Any]) -> str:
    return f"job {detail.get('job', '?')}" + (f" ({detail['kind']})" if detail.get("kind") else "")


def _result_words(detail: dict[str, Any]) -> str:
    result = detail.get("result")
    reason = detail.get("detail")
    return (f", result {result}" if result is not None else "") + (f": {reason}" if reason else "")


def event_text(kind: str, detail: dict[str, Any]) -> str:
    """A history event as a sentence an operator reads at a glance ("job 7 (install) queued by
    campaign 3"), instead of its stored JSON; kinds it does not know are given as
    ``kind: key=value, ...`` so that nothing is hidden."""
    detail = detail or {}
    if kind == "sessions":  # consecutive routine sessions, collapsed when read
        count, first = detail.get("count", 0), detail.get("first")
        return f"{count} DM sessions with nothing else recorded, the first at {first}"
    if kind == "session":
        return "DM session (the device connected and authenticated)"
    if kind == "job-created":
        by = f" by campaign {detail['campaign']}" if detail.get("campaign") is not None else ""
        return f"{_job_words(detail)} queued{by}"
    if kind == "job":
        return f"job {detail.get('job', '?')} {detail.get('state', '?')}{_result_words(detail)}"
    if kind == "job-report-after-cancel":
        return (
            f"job {detail.get('job', '?')} reported {detail.get('state', '?')} after it was cancelled"
            f"{_result_words(detail)}"
        )
    if kind == "inventory":
        deployed = detail.get("deployed") or {}
        listed = ", ".join(f"{ident} {version}".strip() for ident, version in sorted(deployed.items()))
        return f"inventory changed: {listed or 'nothing deployed'}"
    if kind == "registered":
        return f"registered ({detail.get('state', '?')})"
    if kind == "admission":
        return f"{detail.get('state', '?')} by {detail.get('by', '?')}"
    if kind == "enrolled":
        return f"first contact, admitted by the {detail.get('policy', '?')!s} policy"
    if kind == "auth-failed":
        return f"authentication failed: {detail.get('reason', '?')}"
    if kind == "alert-unmatched":
        return (
            f"a SCOMO report (result {detail.get('result')}) matched no job "
            f"(correlator {detail.get('correlator')!r})"
        )
    if kind == "install-notify":
        said = f"{detail.get('status')} {detail.get('text', '')}".rstrip()
        return f"install notify for job {detail.get('job', '?')}: {said}"
    if kind == "updated":
        return "changed: " + ", ".join(f"{name}={value}" for name, value in sorted(detail.items()))
    return f"{kind}: " + ", ".join(f"{name}={value}" for name, value in sorted(detail.items()))


async def create_job(
    db: AsyncSession,
    device: Device,
    kind: JobKind,
    params: dict[str, Any],
    *,
    timeout: float | None = None,
    campaign_id: int | None = None,
    allow_local_urls: bool = False,
) -> Job:
    """Queue one SCOMO operation for one device; it goes out in the device's next session.

    ``params`` by kind: ``artifact_id`` or ``url`` for the package kinds (with ``pkg_id`` and
    ``name``, taken from the artifact when it has them); ``component_id`` for remove,
    activate and deactivate (and update, which checks the device has it); ``node`` for the
    Delivered kinds. Checked now, so a job that cannot be sent is refused at once.

    No network I/O here (this runs inside the caller's transaction): a device with a
    notification address is woken by the server's sweeper, which sends it a Package #0
    within ``sweep_interval`` seconds of the commit (:mod:`omadm.server.sweeper`); a device
    without one takes the job in its next poll.
    """
    params = dict(params)
    artifact_id = params.get("artifact_id")
    if artifact_id:
        owner = await db.scalar(select(Artifact.authority_pk).where(Artifact.id == artifact_id))
        if owner != device.authority_pk:  # another authority's package does not exist for this one
            raise RegistryError(404, f"no artifact {artifact_id}")
    params = check_job(kind, params, allow_local_urls=allow_local_urls)
    if kind in _ON_COMPONENT:
        component = params.get("component_id")
        if component and await deployed_node(db, device, str(component)) is None:
            raise RegistryError(
                422, f"device {device.device_id} has no deployed component {component!r} in its inventory"
            )
    correlator = f"omadm-{secrets.token_hex(8)}"
    now = utc_now()
    job = Job(
        device_pk=device.id,
        kind=kind.value,
        params=params,
        state=JobState.QUEUED.value,
        correlator=correlator,
        campaign_id=campaign_id,
        created=now,
        updated=now,
        deadline=now + timedelta(seconds=timeout) if timeout else None,
    )
    db.add(job)
    await raise_open_jobs(db, device)
    await db.flush()
    await record_event(db, device, "job-created", job=job.id, kind=kind.value)
    return job


def check_job(kind: JobKind, params: dict[str, Any], *, allow_local_urls: bool = False) -> dict[str, Any]:
    """The job's parameters, checked for what every device needs alike (a copy, with ``pkg_id``).

    A package ``url`` must pass the URL policy (http or https, no link-local or metadata
    address: :mod:`omadm.server.url_policy`), since every device of the job fetches it.

    Raises:
        RegistryError: 422 naming what is missing or wrong.
    """
    params = dict(params)
    if params.get("url"):
        try:
            check_package_url(str(params["url"]), allow_local=allow_local_urls)
        except UrlRefused as exc:
            raise RegistryError(422, str(exc)) from None
    if kind in _NEEDS_PACKAGE and not (params.get("artifact_id") or params.get("url")):
        raise RegistryError(422, f"a {kind.value} job needs an artifact_id or a url")
    if kind is JobKind.INSTALL_DIRECT and not params.get("artifact_id"):
        raise RegistryError(422, "direct delivery sends an uploaded artifact: give artifact_id")
    if kind in _ON_COMPONENT and not params.get("component_id") and kind is not JobKind.UPDATE:
        raise RegistryError(422, f"a {kind.value} job needs component_id")
    params.setdefault("pkg_id", params.get("package_id") or "")
    by_url = params.get("url") and not params.get("artifact_id")
    if kind in _NEEDS_PACKAGE and by_url and not params["pkg_id"]:
        # Not guessed from the URL's file name: the device files the package under this id
        # and reports it back (PkgIDRef), and a guess that differs from the package's own id
        # would leave the server unable to recognise the install in the inventory.
        raise RegistryError(
            422,
            f"a {kind.value} job by url needs pkg_id: the package's id as its manifest gives it "
            "(for example com.example.hello-package); with an uploaded artifact it is taken from there",
        )
    try:  # a dry run of the planner: every parameter it needs must be there
        probe = {**params, "pkg_id": params["pkg_id"] or "probe", "node": params.get("node") or "probe"}
        plan_job(0, kind, probe, "probe", "./SCOMO", package_url="http://probe", package_bytes=b"p")
    except ValueError as exc:
        raise RegistryError(422, str(exc)) from None
    return params


async def raise_open_jobs(db: AsyncSession, device: Device) -> None:
    """Tell the DM endpoint that ``device`` has work: an UPDATE statement, always sent.

    The endpoint looks for jobs only on devices with ``has_open_jobs`` set, and clears the
    flag when it finds none. Setting the attribute on the caller's ORM copy is not enough:
    a copy read before a DM session cleared the flag still says True, so the ORM would
    write nothing and the job would wait unsent (seen on PostgreSQL with the campaign
    sweeper). The statement always writes, takes the device row's lock (the endpoint
    locks that row before it looks for jobs, so it either sees this job or clears the
    flag before this raises it again), and moves ``row_version`` on, so rows the fast
    path kept of the device are refused at their next write.
    """
    await db.execute(
        update(Device)
        .where(Device.id == device.id)
        .values(has_open_jobs=True)
        .execution_options(synchronize_session=False)
    )
    set_committed_value(device, "has_open_jobs", True)  # the copy agrees, with nothing to flush


async def cancel_job(db: AsyncSession, job: Job) -> Job:
    """Cancel a job that is not finished, whatever its state: the server sends it no more.

    A queued job is simply never sent. One already sent (``sent`` or ``accepted``) cannot be
    called back from the device, but an operator must still be able to stop the server
    sending it again (a device that crashes on a job gets it at each contact otherwise); a
    report the device sends later is still recorded against the cancelled job (its result
    code, its detail and the device's history), so what the device did is known.
    """
    state = JobState(job.state)
    if state.final:
        raise RegistryError(409, f"job {job.id} is already {state.value}")
    job.state = JobState.CANCELLED.value
    job.finished_at = job.updated = utc_now()
    job.detail = (
        "cancelled by an operator"
        if state is JobState.QUEUED
        else f"cancelled by an operator while {state.value}: the device may still run it; "
        "a report it sends is recorded here"
    )
    return job


async def deployed_node(db: AsyncSession, device: Device, component_id: str) -> str | None:
    """The Deployed/<X> name of a component, from the device's last inventory."""
    result = await db.execute(
        select(InventoryEntry.node).where(
            InventoryEntry.device_pk == device.id,
            InventoryEntry.kind == InventoryKind.DEPLOYED.value,
            InventoryEntry.ident == component_id,
        )
    )
    return result.scalars().first()
