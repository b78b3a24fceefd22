"""The device registry and job creation: what operators (CLI, REST API, campaigns) change.

Plain async functions over an ``AsyncSession``; the caller owns the transaction. Errors are
``RegistryError`` with an HTTP-like status (404 unknown, 409 conflict, 422 invalid) and a
message that names the problem, so the CLI and the REST API can show them as they are.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from omadm.protocol.auth import new_nonce
from omadm.protocol.codes import AuthType

from .jobs import plan_job
from .store.models import (
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

__all__ = [
    "AUTH_TYPES",
    "RegistryError",
    "add_device",
    "cancel_job",
    "create_job",
    "find_device",
    "record_event",
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


async def find_device(db: AsyncSession, device_id: str) -> Device | None:
    result = await db.execute(select(Device).where(Device.device_id == device_id))
    return result.scalar_one_or_none()


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
) -> Device:
    """Pre-register a device with the credentials it will present (CLCRED)."""
    if not device_id:
        raise RegistryError(422, "a device needs its DevId (e.g. IMEI:490154203237518)")
    if auth not in AUTH_TYPES:
        raise RegistryError(422, f"auth must be one of {', '.join(AUTH_TYPES)}, not {auth!r}")
    if await find_device(db, device_id) is not None:
        raise RegistryError(409, f"device {device_id} is already registered")
    device = Device(
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
    )
    db.add(device)
    await db.flush()
    await record_event(db, device, "registered", state=state.value)
    return device


async def record_event(db: AsyncSession, device: Device, what: str, **detail: Any) -> None:
    """Append to the device's history."""
    db.add(DeviceEvent(device_pk=device.id, kind=what, detail=detail, at=utc_now()))


async def create_job(
    db: AsyncSession,
    device: Device,
    kind: JobKind,
    params: dict[str, Any],
    *,
    timeout: float | None = None,
    campaign_id: int | None = None,
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
    if kind in _NEEDS_PACKAGE and not (params.get("artifact_id") or params.get("url")):
        raise RegistryError(422, f"a {kind.value} job needs an artifact_id or a url")
    if kind is JobKind.INSTALL_DIRECT and not params.get("artifact_id"):
        raise RegistryError(422, "direct delivery sends an uploaded artifact: give artifact_id")
    if kind in _ON_COMPONENT:
        component = params.get("component_id")
        if not component and kind is not JobKind.UPDATE:
            raise RegistryError(422, f"a {kind.value} job needs component_id")
        if component and await deployed_node(db, device, str(component)) is None:
            raise RegistryError(
                422, f"device {device.device_id} has no deployed component {component!r} in its inventory"
            )
    params.setdefault("pkg_id", params.get("package_id") or "")
    correlator = f"omadm-{secrets.token_hex(8)}"
    try:  # a dry run of the planner: every parameter it needs must be there
        probe = {**params, "pkg_id": params["pkg_id"] or "probe", "node": params.get("node") or "probe"}
        plan_job(
            0, kind, probe, correlator, device.scomo_root, package_url="http://probe", package_bytes=b"p"
        )
    except ValueError as exc:
        raise RegistryError(422, str(exc)) from None
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
    device.has_open_jobs = True  # the DM endpoint looks for jobs only on devices with this set
    await db.flush()
    await record_event(db, device, "job-created", job=job.id, kind=kind.value)
    return job


async def cancel_job(db: AsyncSession, job: Job) -> Job:
    """Cancel a job the device has not been sent yet; one it works on cannot be called back."""
    state = JobState(job.state)
    if state.final:
        raise RegistryError(409, f"job {job.id} is already {state.value}")
    if state is not JobState.QUEUED:
        raise RegistryError(409, f"job {job.id} is {state.value}: the device has it already")
    job.state = JobState.CANCELLED.value
    job.finished_at = job.updated = utc_now()
    job.detail = "cancelled by an operator"
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

