"""``/api/v1/devices``: pre-register (one, or a batch), list, show, inventory, history, admission, tags.

Every route works within the token's management authority: its devices only; a DevId that
only another authority registered is a 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..registry import (
    AUTH_TYPES,
    BulkRefused,
    NewDevice,
    RegistryError,
    add_device,
    add_devices,
    record_event,
)
from ..store.models import (
    DEFAULT_AUTHORITY_PK,
    Device,
    DeviceEvent,
    DeviceState,
    InventoryEntry,
    InventoryKind,
)
from .auth import Db, Operator, Viewer, audit
from .problems import Problem
from .schemas import (
    DeviceAccept,
    DeviceCreate,
    DeviceOut,
    DevicesCreate,
    DevicesCreated,
    EventOut,
    InventoryOut,
    Page,
    Paging,
    ProblemOut,
    Tags,
)

__all__ = ["device_out", "get_device", "router"]

router = APIRouter(prefix="/devices", tags=["devices"])

_AUTH_NAMES = {scheme.value: name for name, scheme in AUTH_TYPES.items()}


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


def _tag_filters(tags: list[str]) -> list[ColumnElement[bool]]:
    conditions = []
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise Problem(422, f"a tag filter is key=value, not {tag!r}")
        conditions.append(Device.tags[key].as_string() == value)
    return conditions


@router.post("", status_code=201, response_model=DeviceOut, summary="Pre-register a device")
async def create_device(body: DeviceCreate, db: Db, actor: Operator) -> DeviceOut:
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
    return device_out(device)


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
async def create_devices(body: DevicesCreate, db: Db, actor: Operator) -> DevicesCreated:
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
            created = await add_devices(db, batch, authority_pk=actor.authority_pk)
            audit(db, actor, "device.add-bulk", f"{first} .. {last}", count=created, first=first, last=last)
    except BulkRefused as exc:
        raise Problem(exc.status, exc.message, device_ids=exc.device_ids) from None
    return DevicesCreated(created=created)


@router.get("", response_model=Page[DeviceOut], summary="List devices")
async def list_devices(
    *,
    db: Db,
    actor: Viewer,
    paging: Annotated[Paging, Depends()],
    state: Annotated[DeviceState | None, Query(description="pending, accepted or rejected.")] = None,
    tag: Annotated[list[str], Query(description="key=value; repeat for all of several.")] = [],  # noqa: B006
    q: Annotated[str | None, Query(max_length=255, description="Part of the DevId.")] = None,
) -> Page[DeviceOut]:
    conditions = [Device.authority_pk == actor.authority_pk, *_tag_filters(tag)]
    if state is not None:
        conditions.append(Device.state == state.value)
    if q:
        conditions.append(func.lower(Device.device_id).contains(q.lower(), autoescape=True))
    async with db.begin():
        total = await db.scalar(select(func.count()).select_from(Device).where(*conditions)) or 0
        query = (
            select(Device)
            .where(*conditions)
            .order_by(Device.device_id)
            .limit(paging.limit)
            .offset(paging.offset)
        )
        devices = list((await db.scalars(query)).all())
    return Page(items=[device_out(d) for d in devices], total=total, limit=paging.limit, offset=paging.offset)


@router.get("/{device_id}", response_model=DeviceOut, summary="One device")
async def show_device(device_id: str, db: Db, actor: Viewer) -> DeviceOut:
    async with db.begin():
        return device_out(await get_device(db, device_id, authority_pk=actor.authority_pk))


@router.get("/{device_id}/inventory", response_model=list[InventoryOut], summary="SCOMO inventory")
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


@router.get("/{device_id}/history", response_model=Page[EventOut], summary="History, newest first")
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
    return Page(
        items=[EventOut.model_validate(e) for e in events],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.post("/{device_id}/accept", response_model=DeviceOut, summary="Accept a pending device")
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


@router.post("/{device_id}/reject", response_model=DeviceOut, summary="Reject a device")
async def reject_device(device_id: str, db: Db, actor: Operator) -> DeviceOut:
    async with db.begin():
        device = await get_device(db, device_id, for_update=True, authority_pk=actor.authority_pk)
        before = device.state
        device.state = DeviceState.REJECTED.value
        await record_event(db, device, "admission", state=device.state, by=actor.name)
        audit(db, actor, "device.reject", device.device_id, before=before)
    return device_out(device)


@router.put("/{device_id}/tags", response_model=DeviceOut, summary="Replace a device's tags")
async def put_tags(device_id: str, tags: Annotated[Tags, Body()], db: Db, actor: Operator) -> DeviceOut:
    async with db.begin():
        device = await get_device(db, device_id, for_update=True, authority_pk=actor.authority_pk)
        before = dict(device.tags or {})
        device.tags = dict(tags)
        audit(db, actor, "device.tags", device.device_id, before=before, after=dict(tags))
    return device_out(device)
