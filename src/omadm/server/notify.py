"""Package #0: wake a device that has work waiting, over UDP or HTTP (DM Notification 1.2).

A device with queued jobs and a notification address (``Device.notify_address``) gets a
server-alerted trigger: ``udp://host:port`` sends one datagram (port 2948, the WDP push
port, when none is given), ``http://`` or ``https://`` POSTs it as
``application/vnd.syncml.notification``. Any other address is logged and nothing is sent.
A device without an address is never notified: its next poll picks its jobs up.

The trigger proves itself with the digest of :mod:`omadm.protocol.notification`: our
``server_id`` as server identifier (the SRVCRED ``AAuthName`` the device keeps, pitfall 36),
the device's ``server_password`` and the ``server_nonce`` it last issued to us; ui-mode
background, initiator server, a random session-id (a fresh one each time, so a device that
dropped a session for a trigger it already used is not stuck with it for the ten minutes a
client remembers session-ids). A device registered without a server password gets a trigger
it cannot verify; it is sent anyway (some clients accept any trigger) and the log says so.

Rate limit, per device: at most one Pkg#0 per ``config.notify_interval`` seconds, with one
exception: a job queued after the last notification is announced at once if the device has
contacted us since that notification (it is reachable and answered it; it does not know
about the new job). A device that does not answer is thus tried once an interval, never more.

Sending happens outside any transaction: :func:`notify_due` *claims* the devices first (one
short transaction that sets ``last_notified``; rows another worker or a DM message holds are
skipped, so several workers never notify one device twice), sends, then records the outcome
as a device event (``notified`` or ``notify-failed``) in a second short transaction. Nothing
here raises for what the network does: an unreachable device or a bad address is a
``notify-failed`` event and a log line naming the reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from omadm.addresses import IPAddress, parse_ip
from omadm.protocol.auth import RESYNC_NONCE
from omadm.protocol.codes import UiMode
from omadm.protocol.notification import (
    NOTIFICATION_CONTENT_TYPE,
    NOTIFICATION_WDP_PORT,
    Initiator,
    Notification,
    encode_notification,
    session_id_hex,
)

from .config import ServerConfig
from .store.models import (
    DEFAULT_AUTHORITY_PK,
    Authority,
    Device,
    DeviceEvent,
    DeviceState,
    Job,
    JobState,
    utc_now,
)
from .url_policy import NOTIFY_SCHEMES, UrlRefused, check_notify_address, check_resolved

__all__ = [
    "SEND_TIMEOUT",
    "NotifyError",
    "NotifyResult",
    "build_package0",
    "new_session_id",
    "notify_device",
    "notify_due",
    "send_package0",
]

log = logging.getLogger("omadm.server.notify")

#: Seconds an HTTP notification may take (connect + answer); UDP does not wait.
SEND_TIMEOUT = 5.0
#: Devices claimed per sweep; the rest are claimed by the next one.
BATCH = 500
#: Notifications in flight at once.
PARALLEL = 32


class NotifyError(Exception):
    """A Package #0 could not be sent; the message says why (address, network, HTTP status)."""


@dataclass(frozen=True)
class NotifyResult:
    """What happened to one device's notification; ``reason`` says why when not ``sent``."""

    device_id: str
    address: str
    sent: bool
    session_id: str = ""  # the trigger's session-id as the device's Pkg#1 will carry it (hex)
    reason: str = ""


@dataclass(frozen=True)
class _Claimed:
    """A device claimed for notification, with its trigger built (no ORM object crosses I/O)."""

    device_pk: int
    device_id: str
    address: str
    session_id: int
    package: bytes
    verifiable: bool
    allow_local: bool = False  # the server's allow_local_urls


def new_session_id() -> int:
    """A random Pkg#0 session-id in 1..0xFFFF."""
    return secrets.randbelow(0xFFFF) + 1


def build_package0(config: ServerConfig, device: Device, session_id: int, *, server_id: str = "") -> bytes:
    """The Package #0 that asks ``device`` to open session ``session_id`` with us (background UI).

    ``server_id``: the ServerID of the device's management authority (default: ours).
    """
    notification = Notification(
        server_id=server_id or config.server_id,
        session_id=session_id,
        ui_mode=UiMode.BACKGROUND,
        initiator=Initiator.SERVER,
    )
    return encode_notification(notification, device.server_password or "", bytes(device.server_nonce or b""))


async def send_package0(
    address: str, package: bytes, *, client: httpx.AsyncClient | None = None, allow_local: bool = False
) -> None:
    """Send ``package`` to ``address`` (``udp://host[:port]`` or ``http(s)://...``).

    The address passes the URL policy first (:mod:`omadm.server.url_policy`), its host's
    resolved addresses too: one stored before the policy, or a name that now resolves to a
    link-local or metadata address, is not sent to (``allow_local``: the setting that lifts it).

    Raises:
        NotifyError: the address is not usable, or the network or the receiver refused.
    """
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError as exc:
        raise NotifyError(f"bad notification address {address!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme in NOTIFY_SCHEMES and parts.hostname:
        await _check_policy(address, parts.hostname, port, allow_local)
    if scheme == "udp":
        if not parts.hostname:
            raise NotifyError(f"bad notification address {address!r}: no host")
        await _send_udp(parts.hostname, port or NOTIFICATION_WDP_PORT, package)
    elif scheme in ("http", "https"):
        if not parts.hostname:
            raise NotifyError(f"bad notification address {address!r}: no host")
        if client is None:
            async with httpx.AsyncClient(timeout=SEND_TIMEOUT) as own:
                await _send_http(own, address, package)
        else:
            await _send_http(client, address, package)
    else:
        raise NotifyError(
            f"unsupported notification address {address!r}: use udp://host:port or http(s)://host:port/path"
        )


async def _check_policy(address: str, host: str, port: int | None, allow_local: bool) -> None:
    try:
        check_notify_address(address, allow_local=allow_local)
        if allow_local:
            return
        literal = parse_ip(host)
        if literal is not None:
            found: list[IPAddress] = [literal]
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port)
            found = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
        check_resolved("notification address", host, found)
    except UrlRefused as exc:
        raise NotifyError(f"refused by the URL policy: {exc}") from None
    except (OSError, UnicodeError) as exc:
        raise NotifyError(f"{host}: {exc}") from None


async def _send_udp(host: str, port: int, package: bytes) -> None:
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=(host, port))
    except (OSError, UnicodeError) as exc:  # name resolution, no route, a host name IDNA refuses
        raise NotifyError(f"udp {host}:{port}: {exc}") from None
    try:
        transport.sendto(package)
    finally:
        transport.close()


async def _send_http(client: httpx.AsyncClient, address: str, package: bytes) -> None:
    try:
        response = await client.post(
            address, content=package, headers={"Content-Type": NOTIFICATION_CONTENT_TYPE}
        )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise NotifyError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
    if not response.is_success:
        status = f"{response.status_code} {response.reason_phrase}".rstrip()
        raise NotifyError(f"the device answered HTTP {status}")


# -- which devices, and claiming them -----------------------------------------------------------


def _due_query(now: datetime, interval: float) -> Select[Device]:
    """Accepted devices with an address and queued jobs that the rate limit lets us notify."""
    cutoff = now - timedelta(seconds=interval)
    queued = select(Job.id).where(Job.device_pk == Device.id, Job.state == JobState.QUEUED.value)
    news = queued.where(Job.created > Device.last_notified)
    due = or_(
        Device.last_notified.is_(None),
        Device.last_notified <= cutoff,
        and_(Device.last_contact >= Device.last_notified, news.exists()),
    )
    return select(Device).where(
        Device.notify_address != "",
        Device.state == DeviceState.ACCEPTED.value,
        queued.exists(),
        due,
    )


async def _server_ids(db: AsyncSession, config: ServerConfig) -> dict[int, str]:
    """Each authority's ServerID (the default one's is the configured ``server_id``)."""
    rows = await db.execute(select(Authority.id, Authority.server_id))
    return {pk: server_id or config.server_id for pk, server_id in rows}


#: How long a device may leave our triggers unanswered before the next one resynchronises its
#: nonces (at least; three notification intervals when those are longer). Long enough that a
#: fleet held back by load shedding, or devices off for the night's first hours, are not reset
#: for nothing (each reset costs the device one challenge); short enough that a device whose
#: nonces went out of step is back the same hour.
RESYNC_PATIENCE = timedelta(minutes=15)


def _out_of_step(device: Device, now: datetime, interval: float) -> bool:
    """Whether the device was notified, has not contacted us since, and not for a long while."""
    notified, contact = device.last_notified, device.last_contact
    if notified is None or (contact is not None and contact >= notified):
        return False
    silent_since = contact or device.created
    patience = max(RESYNC_PATIENCE, timedelta(seconds=3 * interval))
    return silent_since is None or now - silent_since >= patience


def _claim(config: ServerConfig, device: Device, now: datetime, server_ids: dict[int, str]) -> _Claimed:
    session_id = new_session_id()
    if (
        _out_of_step(device, now, config.notify_interval)
        and device.server_password
        and (
            bytes(device.server_nonce or b"") != RESYNC_NONCE
            or bytes(device.client_nonce or b"") != RESYNC_NONCE
        )
    ):
        # Our triggers went unanswered for long: the device may be off, or it may hold other nonces
        # than ours (a message that carried its new nonce was lost, a restore from a backup)
        # and silently drop every trigger we sign. Notification 1.2's remedy: sign with the
        # resync nonce, which a device accepts whatever it holds, and start both nonces again
        # from it, as the device does when it verifies such a trigger. A device that was only
        # off costs one challenge at its next session.
        device.server_nonce = device.client_nonce = RESYNC_NONCE
        log.info(
            "pkg0 device=%s: triggers unanswered since %s; signed with the resync nonce",
            device.device_id,
            (device.last_contact or device.created or now).isoformat(timespec="seconds"),
        )
    device.last_notified = now
    server_id = server_ids.get(device.authority_pk, config.server_id)
    return _Claimed(
        device_pk=device.id,
        device_id=device.device_id,
        address=device.notify_address,
        session_id=session_id,
        package=build_package0(config, device, session_id, server_id=server_id),
        verifiable=bool(device.server_password),
        allow_local=config.allow_local_urls,
    )


async def notify_due(
    sessions: async_sessionmaker[AsyncSession], config: ServerConfig, now: datetime | None = None
) -> list[NotifyResult]:
    """Notify every device that has queued jobs, an address, and is due under the rate limit.

    At most :data:`BATCH` devices per call. Safe in several workers at once: a device is
    claimed (``last_notified`` set) under a row lock that other workers skip.
    """
    now = now or utc_now()
    async with sessions() as db, db.begin():
        query = (
            _due_query(now, config.notify_interval)
            .order_by(Device.last_notified.nulls_first(), Device.id)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        devices = list((await db.execute(query)).scalars())
        server_ids = await _server_ids(db, config) if devices else {}
        claimed = [_claim(config, device, now, server_ids) for device in devices]
    if not claimed:
        return []
    return await _deliver(sessions, claimed, now)


async def notify_device(
    sessions: async_sessionmaker[AsyncSession],
    config: ServerConfig,
    device_id: str,
    *,
    force: bool = False,
    now: datetime | None = None,
    authority_pk: int = DEFAULT_AUTHORITY_PK,
) -> NotifyResult:
    """Notify one device now (an operator's "wake up").

    Without ``force`` it must be due as :func:`notify_due` understands it (queued jobs, rate
    limit); with ``force`` any accepted device with an address is notified. Never raises for
    the network: the result says whether it was sent and, if not, why.
    """
    now = now or utc_now()
    async with sessions() as db, db.begin():
        base = select(Device) if force else _due_query(now, config.notify_interval)
        query = base.where(
            Device.device_id == device_id, Device.authority_pk == authority_pk
        ).with_for_update()
        device = (await db.execute(query)).scalar_one_or_none()
        if device is None:
            reason = await _why_not(db, device_id, authority_pk, config.notify_interval)
            return NotifyResult(device_id, "", False, reason=reason)
        if not device.notify_address:
            return NotifyResult(device_id, "", False, reason=_NO_ADDRESS)
        if device.state != DeviceState.ACCEPTED.value:
            return NotifyResult(device_id, device.notify_address, False, reason=f"device is {device.state}")
        claimed = _claim(config, device, now, await _server_ids(db, config))
    (result,) = await _deliver(sessions, [claimed], now)
    return result


_NO_ADDRESS = "no notification address: the device's next poll picks its jobs up"


async def _why_not(db: AsyncSession, device_id: str, authority_pk: int, interval: float) -> str:
    query = select(Device).where(Device.device_id == device_id, Device.authority_pk == authority_pk)
    device = (await db.execute(query)).scalar_one_or_none()
    if device is None:
        return f"no device {device_id}"
    if not device.notify_address:
        return _NO_ADDRESS
    if device.state != DeviceState.ACCEPTED.value:
        return f"device is {device.state}"
    has_queued = (
        await db.execute(
            select(Job.id).where(Job.device_pk == device.id, Job.state == JobState.QUEUED.value).limit(1)
        )
    ).first()
    if has_queued is None:
        return "no queued jobs"
    last = device.last_notified.isoformat(timespec="seconds") if device.last_notified else "never"
    return f"rate limit: notified at {last}, at most once per {interval:g} s"


# -- sending and recording -------------------------------------------------------------------------


async def _deliver(
    sessions: async_sessionmaker[AsyncSession], claimed: Iterable[_Claimed], now: datetime
) -> list[NotifyResult]:
    limit = asyncio.Semaphore(PARALLEL)
    async with httpx.AsyncClient(timeout=SEND_TIMEOUT) as client:

        async def one(target: _Claimed) -> NotifyResult:
            async with limit:
                return await _send_one(client, target)

        targets = list(claimed)
        results = await asyncio.gather(*(one(t) for t in targets))
    async with sessions() as db, db.begin():
        for target, result in zip(targets, results, strict=True):
            detail: dict[str, Any] = {"address": target.address}
            if result.sent:
                detail["session_id"] = result.session_id
            else:
                detail["reason"] = result.reason
            db.add(
                DeviceEvent(
                    device_pk=target.device_pk,
                    kind="notified" if result.sent else "notify-failed",
                    detail=detail,
                    at=now,
                )
            )
    return list(results)


async def _send_one(client: httpx.AsyncClient, target: _Claimed) -> NotifyResult:
    hex_id = session_id_hex(target.session_id)
    try:
        await send_package0(target.address, target.package, client=client, allow_local=target.allow_local)
    except NotifyError as exc:
        log.warning("pkg0 device=%s to %s not sent: %s", target.device_id, target.address, exc)
        return NotifyResult(target.device_id, target.address, False, reason=str(exc))
    except Exception as exc:  # a bug, not the network: keep the sweeper alive, keep the trace
        log.exception("pkg0 device=%s to %s failed", target.device_id, target.address)
        return NotifyResult(target.device_id, target.address, False, reason=f"{type(exc).__name__}: {exc}")
    log.info(
        "pkg0 device=%s to %s session=%s sent%s",
        target.device_id,
        target.address,
        hex_id,
        "" if target.verifiable else " (no server password: the device cannot verify it)",
    )
    return NotifyResult(target.device_id, target.address, True, session_id=hex_id)
