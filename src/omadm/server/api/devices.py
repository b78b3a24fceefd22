"""``/api/v1/devices``: pre-register (one, or a batch), list, show, update, delete, inventory,
history, admission, tags.

Every route works within the token's management authority: its devices only; a DevId that
only another authority registered is a 404.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from ..registry import (
    AUTH_TYPES,
    BulkRefused,
    NewDevice,
    RegistryError,
    add_device,
    add_devices,
    delete_device,
    event_text,
    record_event,
    update_device,
)
from ..store.models import (
    DEFAULT_AUTHORITY_PK,
    Device,
    DeviceEvent,
    DeviceState,
    InventoryEntry,
    InventoryKind,
)
from ..targets import Target, parse_pairs, plan_per_target
from .auth import Db, Operator, Viewer, audit
from .problems import Problem
from .schemas import (
    MAX_LIMIT,
    DeviceAccept,
    DeviceCount,
    DeviceCreate,
    DeviceOut,
    DevicePage,
    DevicesCreate,
    DevicesCreated,
    DeviceUpdate,
    EventOut,
    InventoryOut,
    Page,
    Paging,
    ProblemOut,
    Tags,
)

__all__ = ["COUNT_BOUND", "decode_cursor", "device_out", "encode_cursor", "get_device", "router"]

router = APIRouter(prefix="/devices", tags=["devices"])

#: ``count=auto`` counts exactly up to this many matches (PostgreSQL), then estimates.
COUNT_BOUND = 10_000
#: The longest cursor taken: a 255-character DevId of 4-byte characters, in base64url JSON.
MAX_CURSOR = 2048

_AUTH_NAMES = {scheme.value: name for name, scheme in AUTH_TYPES.items()}


#: The deepest offset the list accepts: past it the database's walk over the skipped rows
#: costs more than a page should (0.4 s at 990,000), and the cursor reaches any depth.
MAX_OFFSET = 10_000


def device_out(device: Device) -> DeviceOut:
    return DeviceOut(
        device_id=device.device_id,
        state=device.state,
        auth=_AUTH_NAMES.get(device.auth_type, device.auth_type),
        username=device.username,
        has_server_password=bool(device.server_password),
        notify_address=device.notify_address,
        tags=device.tags or {},
        devinfo=device.devinfo or {},
        devdetail=device.devdetail or {},
        scomo_root=device.scomo_root,
        created=device.created,
        last_contact=device.last_contact,
        inventory_updated=device.inventory_updated,
    )


async def get_device(
    db: AsyncSession, device_id: str, *, for_update: bool = False, authority_pk: int = DEFAULT_AUTHORITY_PK
) -> Device:
    """The authority's device, or a 404 problem."""
    query = select(Device).where(Device.authority_pk == authority_pk, Device.device_id == device_id)
    if for_update:
        query = query.with_for_update()
    device = (await db.execute(query)).scalar_one_or_none()
    if device is None:
        raise Problem(404, f"no device {device_id}")
    return device


@router.post("", status_code=201, response_model=DeviceOut, summary="Pre-register a device")
async def create_device(body: DeviceCreate, db: Db, actor: Operator, request: Request) -> DeviceOut:
    """A device with a notification address and no server password gets one generated: the
    answer's ``generated_server_password`` shows it, once (it is never shown again).
    """
    config = request.app.state.config
    async with db.begin():
        device = await add_device(
            db,
            body.device_id,
            username=body.username,
            password=body.password,
            auth=body.auth,
            server_password=body.server_password,
            notify_address=body.notify_address,
            tags=dict(body.tags),
            authority_pk=actor.authority_pk,
            allow_local_urls=config.allow_local_urls,
            generate_server_password=True,
        )
        audit(
            db,
            actor,
            "device.add",
            device.device_id,
            auth=body.auth,
            username=body.username,
            notify_address=body.notify_address,
            tags=dict(body.tags),
        )
    out = device_out(device)
    if device.server_password and not body.server_password:
        out.generated_server_password = device.server_password  # shown this once
    return out


@router.post(
    "/bulk",
    status_code=201,
    response_model=DevicesCreated,
    summary="Pre-register a batch of devices (all or none)",
    responses={
        409: {
            "model": ProblemOut,
            "description": "Some DevIds are registered already: the problem's `device_ids` names them all.",
        }
    },
)
async def create_devices(body: DevicesCreate, db: Db, actor: Operator, request: Request) -> DevicesCreated:
    """Up to 10,000 devices in one transaction, for fleets and the simulator (``omadm sim register``).

    Each device is registered as ``POST /devices`` would; the batch is refused whole when a
    DevId repeats in it (422) or is registered already (409), and the problem document's
    ``device_ids`` names every such DevId. One audit entry records the batch (``device.add-bulk``:
    how many, the first and last DevId). The answer is only the count: a client that sent
    10,000 devices knows them.
    """
    batch = [
        NewDevice(
            device_id=d.device_id,
            username=d.username,
            password=d.password,
            auth=d.auth,
            server_password=d.server_password,
            notify_address=d.notify_address,
            tags=dict(d.tags),
        )
        for d in body.devices
    ]
    first, last = batch[0].device_id, batch[-1].device_id
    try:
        async with db.begin():
            created = await add_devices(
                db,
                batch,
                authority_pk=actor.authority_pk,
                allow_local_urls=request.app.state.config.allow_local_urls,
            )
            audit(db, actor, "device.add-bulk", f"{first} .. {last}", count=created, first=first, last=last)
    except BulkRefused as exc:
        raise Problem(exc.status, exc.message, device_ids=exc.device_ids) from None
    return DevicesCreated(created=created)


@router.get(
    "",
    response_model=DevicePage,
    summary="List devices",
    responses={422: {"model": ProblemOut, "description": "A filter, a version or the cursor is not valid."}},
)
async def list_devices(
    *,
    db: Db,
    actor: Viewer,
    state: Annotated[DeviceState | None, Query(description="pending, accepted or rejected.")] = None,
    tag: Annotated[
        list[str], Query(description="name=value: the tag has this value; repeat for all of several.")
    ] = [],  # noqa: B006
    devinfo: Annotated[
        list[str], Query(description="name=value: the DevInfo leaf has this value (e.g. Mod=W7); repeat.")
    ] = [],  # noqa: B006
    component: Annotated[
        str | None, Query(max_length=255, description="A deployed component's id (SCOMO Deployed ID).")
    ] = None,
    version: Annotated[
        str | None,
        Query(max_length=64, description="With component: deployed at this version (PEP 440: 1.0 is 1.0.0)."),
    ] = None,
    version_below: Annotated[
        str | None, Query(max_length=64, description="With component: deployed at a version below this one.")
    ] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=255,
            description="The DevId starts with this; case matters (IMEI: is not imei:). "
            "A prefix runs on the DevId index; no wildcards.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many devices.")] = 100,
    offset: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_OFFSET,
            description=f"Skip this many matches (at most {MAX_OFFSET:,}). Kept for old clients: "
            "the database walks every skipped row, so deeper pages are reached with cursor, "
            "which costs the same at any depth.",
        ),
    ] = 0,
    cursor: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR,
            description="Where the page starts: the previous page's next_cursor, with the same "
            "filters. Not with a nonzero offset.",
        ),
    ] = None,
    count: Annotated[
        DeviceCount,
        Query(
            description="exact: count every match; none: do not count (total is null); auto: exact "
            f"up to {COUNT_BOUND:,} matches, above that the database's estimate (total_exact false; "
            "exact on SQLite)."
        ),
    ] = DeviceCount.AUTO,
) -> DevicePage:
    """Devices in DevId order (byte order), filtered as campaign targets are (:class:`Target`).

    Every filter and the page run on an index, so any page of a million devices costs about
    what the first one does when paged by ``cursor`` (keyset: the DevIds after the last one
    shown), and a device added or removed between pages neither shifts nor repeats the others.
    """
    if cursor and offset:
        raise Problem(422, "give cursor or offset, not both: a cursor says where the page starts")
    texts: dict[str, list[str | None]] = {"q": [q], "tag": [*tag], "devinfo": [*devinfo]}
    texts.update(component=[component], version=[version], version_below=[version_below])
    for name, values in texts.items():
        if any(value and "\x00" in value for value in values):  # PostgreSQL text refuses it (a 500)
            raise Problem(422, f"{name}: no DevId, tag, DevInfo value or version holds a NUL character")
    after = decode_cursor(cursor) if cursor else None
    target = Target(
        tags=parse_pairs(tag, "tag"),
        devinfo=parse_pairs(devinfo, "devinfo"),
        state=state,
        component=component or None,
        version=version,
        version_below=version_below,
        prefix=q or None,
    )
    async with db.begin():
        await plan_per_target(db)
        dialect = db.get_bind().dialect.name
        target = await target.with_stored_names(db)
        where = target.where(actor.authority_pk, dialect)
        query = select(Device).where(where).order_by(Device.device_id).limit(limit + 1)
        if after is not None:
            query = query.where(Device.device_id > after)
        if offset:
            query = query.offset(offset)
        devices = list((await db.scalars(query)).all())
        more = len(devices) > limit
        devices = devices[:limit]
        if count is not DeviceCount.NONE and after is None and not more and (devices or not offset):
            total: int | None = offset + len(devices)  # the last page, counted from the start
            exact = True
        else:
            total, exact = await _count(db, where, count, dialect)
    return DevicePage(
        items=[device_out(d) for d in devices],
        limit=limit,
        offset=offset,
        next_cursor=encode_cursor(devices[-1].device_id) if more else None,
        total=total,
        total_exact=exact,
    )


def encode_cursor(after: str) -> str:
    """The opaque ``next_cursor`` of a page that ends at DevId ``after``.

    Opaque so that what it holds may change; base64url of ``{"after": DevId}`` for now.
    """
    raw = json.dumps({"after": after}, ensure_ascii=False, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The DevId a cursor starts after, or a 422 problem that says what is wrong with it."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
    except (ValueError, binascii.Error):
        raise Problem(422, "the cursor is not base64url: pass a page's next_cursor as it is") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise Problem(422, "the cursor is not one this API made: its content is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("after"), str) or "\x00" in data["after"]:
        raise Problem(422, "the cursor is not one this API made: it names no DevId to start after")
    after: str = data["after"]
    return after


async def _count(
    db: AsyncSession, where: ColumnElement[bool], mode: DeviceCount, dialect: str
) -> tuple[int | None, bool]:
    """How many devices match, and whether that is exact (see ``count`` in :func:`list_devices`).

    An exact count walks every match: over 100 ms for a million devices on PostgreSQL (the
    page itself takes about 10). In ``auto`` it stops at ``COUNT_BOUND`` + 1, and past that
    the planner's estimate (from the statistics it keeps of ``devices`` and
    ``device_attributes``) stands in, never below what was counted. SQLite keeps no such
    estimate, and its fleets are small: it counts.
    """
    if mode is DeviceCount.NONE:
        return None, False
    if mode is DeviceCount.EXACT or dialect != "postgresql":
        return int(await db.scalar(select(func.count()).select_from(Device).where(where)) or 0), True
    bound = COUNT_BOUND
    some = select(Device.id).where(where).limit(bound + 1).subquery()
    counted = int(await db.scalar(select(func.count()).select_from(some)) or 0)
    if counted <= bound:
        return counted, True
    plan = await db.scalar(_Explain(select(Device.id).where(where)))
    if isinstance(plan, (str, bytes)):
        plan = json.loads(plan)  # asyncpg hands json over as text
    return max(int(plan[0]["Plan"]["Plan Rows"]), bound + 1), False


class _Explain(Executable, ClauseElement):
    """``EXPLAIN (FORMAT JSON) <select>`` with the select's parameters bound (PostgreSQL)."""

    inherit_cache = False

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement


@compiles(_Explain, "postgresql")
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.statement, **kw)


@router.get("/{device_id:path}/inventory", response_model=list[InventoryOut], summary="SCOMO inventory")
async def device_inventory(
    device_id: str,
    db: Db,
    actor: Viewer,
    kind: Annotated[InventoryKind | None, Query(description="deployed or delivered.")] = None,
) -> list[InventoryOut]:
    async with db.begin():
        device = await get_device(db, device_id, authority_pk=actor.authority_pk)
        query = select(InventoryEntry).where(InventoryEntry.device_pk == device.id)
        if kind is not None:
            query = query.where(InventoryEntry.kind == kind.value)
        entries = (await db.scalars(query.order_by(InventoryEntry.kind, InventoryEntry.node))).all()
    return [InventoryOut.model_validate(entry) for entry in entries]


@router.get("/{device_id:path}/history", response_model=Page[EventOut], summary="History, newest first")
async def device_history(
    device_id: str, db: Db, actor: Viewer, paging: Annotated[Paging, Depends()]
) -> Page[EventOut]:
    async with db.begin():
        device = await get_device(db, device_id, authority_pk=actor.authority_pk)
        where = DeviceEvent.device_pk == device.id
        total = await db.scalar(select(func.count()).select_from(DeviceEvent).where(where)) or 0
        events = (
            await db.scalars(
                select(DeviceEvent)
                .where(where)
                .order_by(DeviceEvent.id.desc())
                .limit(paging.limit)
                .offset(paging.offset)
            )
        ).all()
    return Page(items=_collapse_sessions(events), total=total, limit=paging.limit, offset=paging.offset)


def _collapse_sessions(events: Sequence[DeviceEvent]) -> list[EventOut]:
    """The page's events, newest first, in words; a run of consecutive ``session`` events (a
    device polling with nothing to do) becomes one ``sessions`` item with their count and the
    first one's time, so what happened is not buried under the polls.

    Collapsed when read, not when written: the DM path appends one row per session (the
    cheapest durable write there); finding and rewriting the previous row would cost every
    session a read. ``total`` still counts stored events, and a run cut by the page's edge
    continues on the next page.
    """
    out: list[EventOut] = []
    run: list[DeviceEvent] = []

    def flush() -> None:
        if len(run) == 1:
            event = run[0]
            out.append(_event_out(event.id, event.at, event.kind, event.detail or {}, 1))
        elif run:
            detail = {"count": len(run), "first": run[-1].at.isoformat(), "last": run[0].at.isoformat()}
            out.append(_event_out(run[0].id, run[0].at, "sessions", detail, len(run)))
        run.clear()

    for event in events:
        if event.kind == "session":
            run.append(event)
            continue
        flush()
        out.append(_event_out(event.id, event.at, event.kind, event.detail or {}, 1))
    flush()
    return out


def _event_out(pk: int, at: datetime, kind: str, detail: dict[str, Any], count: int) -> EventOut:
    return EventOut(id=pk, at=at, kind=kind, detail=detail, text=event_text(kind, detail), count=count)


@router.post("/{device_id:path}/accept", response_model=DeviceOut, summary="Accept a pending device")
async def accept_device(
    device_id: str, db: Db, actor: Operator, body: Annotated[DeviceAccept | None, Body()] = None
) -> DeviceOut:
    body = body or DeviceAccept()
    if (body.username is None) != (body.password is None):
        raise Problem(422, "give both username and password, or neither")
    if body.auth is not None and body.username is None:
        raise Problem(422, "auth goes with new credentials: give username and password too")
    async with db.begin():
        device = await get_device(db, device_id, for_update=True, authority_pk=actor.authority_pk)
        detail: dict[str, Any] = {"before": device.state}
        if body.username is not None and body.password is not None:
            auth = body.auth or _AUTH_NAMES.get(device.auth_type) or "md5"
            if auth not in AUTH_TYPES:
                raise RegistryError(422, f"auth must be one of {', '.join(AUTH_TYPES)}, not {auth!r}")
            device.username, device.password = body.username, body.password
            device.auth_type = AUTH_TYPES[auth].value
            detail.update(username=body.username, auth=auth)
        if not device.username:
            raise Problem(422, f"device {device_id} has no credentials yet: give username and password")
        device.state = DeviceState.ACCEPTED.value
        await record_event(db, device, "admission", state=device.state, by=actor.name)
        audit(db, actor, "device.accept", device.device_id, **detail)
    return device_out(device)


@router.post("/{device_id:path}/reject", response_model=DeviceOut, summary="Reject a device")
async def reject_device(device_id: str, db: Db, actor: Operator) -> DeviceOut:
    async with db.begin():
        device = await get_device(db, device_id, for_update=True, authority_pk=actor.authority_pk)
        before = device.state
        device.state = DeviceState.REJECTED.value
        await record_event(db, device, "admission", state=device.state, by=actor.name)
        audit(db, actor, "device.reject", device.device_id, before=before)
    return device_out(device)


@router.put("/{device_id:path}/tags", response_model=DeviceOut, summary="Replace a device's tags")
async def put_tags(device_id: str, tags: Annotated[Tags, Body()], db: Db, actor: Operator) -> DeviceOut:
    async with db.begin():
        device = await get_device(db, device_id, for_update=True, authority_pk=actor.authority_pk)
        before = dict(device.tags or {})
        device.tags = dict(tags)
        audit(db, actor, "device.tags", device.device_id, before=before, after=dict(tags))
    return device_out(device)


# The routes on the device itself come last: ``{device_id:path}`` takes any DevId, a "/"
# included, so the sub-resources above (``/inventory``, ``/history``, ...) must be tried first.
# The one ambiguity left: GET of a DevId that itself ends in "/inventory" or "/history" reaches
# that sub-resource of the shorter DevId; such a device is still updated and deleted here.


@router.get("/{device_id:path}", response_model=DeviceOut, summary="One device")
async def show_device(device_id: str, db: Db, actor: Viewer) -> DeviceOut:
    async with db.begin():
        return device_out(await get_device(db, device_id, authority_pk=actor.authority_pk))


@router.patch(
    "/{device_id:path}",
    response_model=DeviceOut,
    summary="Change a device's credentials, notification address or tags",
)
async def update_device_route(
    device_id: str, body: DeviceUpdate, db: Db, actor: Operator, request: Request
) -> DeviceOut:
    """Only the fields given change. The rules of registration hold: a known ``auth``, a
    notification address that passes the URL policy and has a server password beside it (one
    is generated when there is none, and shown once as ``generated_server_password``).
    Audited as ``device.update`` with what changed (secrets only as "changed").
    """
    async with db.begin():
        device = await get_device(db, device_id, for_update=True, authority_pk=actor.authority_pk)
        changed = await update_device(
            db,
            device,
            username=body.username,
            password=body.password,
            auth=body.auth,
            server_password=body.server_password,
            notify_address=body.notify_address,
            tags=dict(body.tags) if body.tags is not None else None,
            allow_local_urls=request.app.state.config.allow_local_urls,
            generate_server_password=True,
        )
        if changed:
            audit(db, actor, "device.update", device.device_id, **changed)
    out = device_out(device)
    if "server_password" in changed and body.server_password is None:
        out.generated_server_password = device.server_password  # shown this once
    return out


@router.delete(
    "/{device_id:path}",
    status_code=204,
    summary="Delete a device with its jobs, inventory, history and campaign memberships",
    responses={409: {"model": ProblemOut, "description": "A job of the device is sent and not finished."}},
)
async def delete_device_route(device_id: str, db: Db, actor: Operator) -> Response:
    """Refused (409) while the device works on a job (sent or accepted, not finished): wait
    for its result or its timeout. Audited as ``device.delete`` (the audit entry outlives the
    device: it records the DevId, its state and how many jobs and campaign memberships went).
    """
    async with db.begin():
        device = await get_device(db, device_id, for_update=True, authority_pk=actor.authority_pk)
        state, username = device.state, device.username
        removed = await delete_device(db, device)
        audit(db, actor, "device.delete", device_id, state=state, username=username, **removed)
    return Response(status_code=204)
